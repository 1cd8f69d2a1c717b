//! Edge: an ECR repository as it is now (DescribeRepositories), and the tag
//! mutability it reports, which decides whether an existing tag may move.

use anyhow::{Context, Result};
use aws_sdk_ecr::types::{ImageTagMutability, Repository};
use aws_sdk_ecr::Client;

use super::sdk_error;
use crate::registry::copy::tags::Mutability;

/// The repository, `None` when there is none.
pub(super) async fn describe_repository(client: &Client, name: &str) -> Result<Option<Repository>> {
    let described = client
        .describe_repositories()
        .repository_names(name)
        .send()
        .await;
    match described {
        Ok(out) => Ok(out.repositories().first().cloned()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => {
            Err(sdk_error(err)).with_context(|| format!("describing ECR repository {name}"))
        }
    }
}

/// Tag mutability as DescribeRepositories reports it (absent means ECR's default, MUTABLE).
pub fn repository_mutability(repository: &Repository) -> Mutability {
    let filters = || {
        repository
            .image_tag_mutability_exclusion_filters()
            .iter()
            .map(|f| f.filter().to_string())
            .collect()
    };
    match repository.image_tag_mutability() {
        Some(ImageTagMutability::Immutable) => Mutability::Immutable,
        Some(ImageTagMutability::ImmutableWithExclusion) => Mutability::ImmutableExcept(filters()),
        Some(ImageTagMutability::MutableWithExclusion) => Mutability::MutableExcept(filters()),
        _ => Mutability::Mutable,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecr::types::{
        ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType,
    };

    use super::*;

    fn repository(mutability: Option<ImageTagMutability>, filters: &[&str]) -> Repository {
        let mut builder = Repository::builder().set_image_tag_mutability(mutability);
        for filter in filters {
            builder = builder.image_tag_mutability_exclusion_filters(
                ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter(*filter)
                    .build()
                    .unwrap(),
            );
        }
        builder.build()
    }

    #[test]
    fn mutability_is_read_with_its_exclusion_filters() {
        assert_eq!(
            repository_mutability(&repository(None, &[])),
            Mutability::Mutable
        );
        assert_eq!(
            repository_mutability(&repository(Some(ImageTagMutability::Immutable), &[])),
            Mutability::Immutable
        );
        let except_latest = repository_mutability(&repository(
            Some(ImageTagMutability::ImmutableWithExclusion),
            &["latest"],
        ));
        assert_eq!(
            except_latest,
            Mutability::ImmutableExcept(vec!["latest".into()])
        );
        assert!(!except_latest.is_immutable("latest") && except_latest.is_immutable("v1"));
        assert_eq!(
            repository_mutability(&repository(
                Some(ImageTagMutability::MutableWithExclusion),
                &["v*"]
            )),
            Mutability::MutableExcept(vec!["v*".into()])
        );
    }
}
