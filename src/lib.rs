//! privatize: mirror every image a cluster runs into your own registry, and
//! keep ECR pull credentials fresh anywhere. One module per room or edge.

pub mod cli;
pub mod copy_job;
pub mod ecr;
pub mod gen_certs;
pub mod generate;
pub mod image;
pub mod install;
pub mod k8s;
pub mod manifest;
pub mod mutate;
pub mod progress;
pub mod refresh_secrets;
pub mod registry;
pub mod serve;
pub mod sync_image;
pub mod tls;
