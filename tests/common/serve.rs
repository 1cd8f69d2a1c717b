//! Runs the real `privatize serve` for a test: its own certificate (a test CA),
//! ephemeral ports read from its "listening" log line, the testbed's
//! kubeconfig; waits for /readyz and kills it on drop. Clients for both ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::client::TlsStream;

/// How `serve` gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertMode {
    /// tls.crt / tls.key in the server's directory (the default).
    Files,
    /// SERVER_TLS_CERT / SERVER_TLS_KEY PEM text (the files exist too, with another certificate).
    Env,
    /// Paths to files that do not exist yet (write them with [`Serve::write_certificate`]).
    MissingFiles,
}

/// A MutatingWebhookConfiguration name no test registers.
pub const NO_WEBHOOK_CONFIG: &str = "privatize-test-no-such-config";

/// The copy-Job namespace of these servers (shared, never deleted: it holds the CA ConfigMap).
pub const COPY_JOB_NAMESPACE: &str = "privatize-serve-tests";

/// What to start `serve` with.
pub struct ServeOptions {
    /// Extra arguments after `serve` (they come last, so they win).
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    pub cert: CertMode,
    /// KUBECONFIG for the server [default: the testbed's].
    pub kubeconfig: Option<PathBuf>,
    /// Wait for /readyz to pass before returning.
    pub wait_ready: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            cert: CertMode::Files,
            kubeconfig: None,
            wait_ready: true,
        }
    }
}

impl ServeOptions {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A certificate issued for 127.0.0.1 and localhost by a fresh test CA.
pub struct TestCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn issue() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let issued =
            privatize::tls::issue(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        Self {
            ca_pem: issued.ca_pem,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }

    /// DER of the serving certificate, to compare with what a handshake presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}

/// A running `privatize serve`; killed on drop.
pub struct Serve {
    child: Child,
    pub https: SocketAddr,
    pub http: SocketAddr,
    /// Holds tls.crt and tls.key (the paths the server reads).
    pub dir: PathBuf,
    /// Every CA a client of this server trusts.
    pub cas: Vec<String>,
    /// The certificate the server was started with.
    pub cert: TestCert,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Default options: certificate files, testbed kubeconfig, ready.
    pub fn start() -> Self {
        Self::start_with(ServeOptions::default())
    }

    pub fn start_with(options: ServeOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("privatize-serve-{}", super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = TestCert::issue();
        let mut cas = vec![cert.ca_pem.clone()];
        let tb = super::testbed();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_privatize"));
        for key in [
            "SERVER_TLS_CERT",
            "SERVER_TLS_KEY",
            "SERVER_TLS_CERT_PATH",
            "SERVER_TLS_KEY_PATH",
            "SERVER_HTTP_PORT",
            "SERVER_HTTPS_PORT",
            "PRIVATIZE_LOG",
            "PRIVATIZE_LOG_FORMAT",
            "PRIVATIZE_TLS_RELOAD_INTERVAL",
            "PRIVATIZE_SHUTDOWN_DELAY",
            "PRIVATIZE_WEBHOOK_CONFIG",
        ] {
            cmd.env_remove(key);
        }
        match options.cert {
            CertMode::Files => write_pair(&dir, &cert),
            CertMode::MissingFiles => {}
            CertMode::Env => {
                // The files hold another certificate: the environment must win.
                let other = TestCert::issue();
                write_pair(&dir, &other);
                cas.push(other.ca_pem.clone());
                cmd.env("SERVER_TLS_CERT", &cert.cert_pem)
                    .env("SERVER_TLS_KEY", &cert.key_pem);
            }
        }
        if options.kubeconfig.is_none() {
            // serve checks at start that copy Jobs get its CA file through this ConfigMap.
            super::kube::put_testbed_ca_blocking(COPY_JOB_NAMESPACE);
        }
        let kubeconfig = options
            .kubeconfig
            .clone()
            .unwrap_or_else(super::kube::kubeconfig_path);
        cmd.env("KUBECONFIG", kubeconfig)
            .env("HOME", std::env::temp_dir())
            .args(["--log-format", "json", "--log-level", "debug", "serve"])
            .args(["--listen-address", "127.0.0.1"])
            .args(["--https-port", "0", "--http-port", "0"])
            .arg("--tls-cert-path")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-path")
            .arg(dir.join("tls.key"))
            // Test defaults as environment, so `options.args` can override them.
            .env("PRIVATIZE_TLS_RELOAD_INTERVAL", "200ms")
            .env("PRIVATIZE_SHUTDOWN_DELAY", "200ms")
            // No webhook configuration of that name: serve's trust check
            // (does the caBundle trust my certificate?) has nothing to read,
            // whatever other tests registered as `privatize`.
            .env("PRIVATIZE_WEBHOOK_CONFIG", NO_WEBHOOK_CONFIG)
            // The pod side against the testbed: its TLS "ECR" as the target, moto as the ECR API.
            .env("ECR_REGISTRY", format!("{}/serve-tests", tb.target()))
            .env("PRIVATIZE_TARGET_KIND", "ecr")
            .env("PRIVATIZE_CA_FILE", &tb.env["TARGET_CA_FILE"])
            .env("PRIVATIZE_PLAIN_HTTP", tb.source())
            .env("PRIVATIZE_EXCLUDE", "example.invalid")
            .env("COPY_JOB_IMAGE", "127.0.0.1:15000/privatize/privatize:test")
            .env("COPY_JOB_NAMESPACE", COPY_JOB_NAMESPACE)
            .env("AWS_ENDPOINT_URL", &tb.env["MOTO_ENDPOINT"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", &tb.env["AWS_REGION"])
            .env("AWS_MAX_ATTEMPTS", "1")
            // The credential writer touches no test's Secrets unless a test
            // names its namespace.
            .env("PRIVATIZE_CREDENTIAL_NAMESPACES", "privatize-nowhere")
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting privatize serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("PRIVATIZE_TEST_SERVE_LOGS").is_some() {
                    eprintln!("serve: {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut serve = Self {
            child,
            https: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            dir,
            cas,
            cert,
            logs,
        };
        let listening = serve
            .wait_for_log(Duration::from_secs(30), |l| l["message"] == "listening")
            .unwrap_or_else(|| panic!("serve did not start listening:\n{}", serve.log_text()));
        serve.https = listening["https_addr"].as_str().unwrap().parse().unwrap();
        serve.http = listening["http_addr"].as_str().unwrap().parse().unwrap();
        if options.wait_ready {
            serve.wait_ready(Duration::from_secs(30));
        }
        serve
    }

    /// Waits until /readyz answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get("/readyz");
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready after {timeout:?}: {status} {body}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Replaces tls.crt and tls.key the way a Secret volume does: new files
    /// renamed into place.
    pub fn write_certificate(&self, cert: &TestCert) {
        write_pair(&self.dir, cert);
    }

    /// Every log line so far (JSON text).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    /// The first JSON log line matching `pred`, waiting up to `timeout`.
    pub fn wait_for_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .logs()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| pred(l));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (to read its /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGINT`).
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "sending signal {signal}");
    }

    /// Waits for the process to end; `None` if it is still running at the timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the plain-HTTP port: (status, body). Status 0 when nothing answered.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// A TLS client configuration trusting this server's CAs, offering `alpn`.
    pub fn tls_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// Every CA this server's certificates come from, as a rustls root store.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.cas {
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        roots
    }

    /// A TLS connection to the HTTPS port offering `alpn` (e.g. `[b"h2"]`).
    pub async fn connect_tls(
        &self,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config(alpn)));
        let tcp = tokio::net::TcpStream::connect(self.https).await?;
        connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
    }

    /// POSTs `body` to `path` on the HTTPS port, over h2 or HTTP/1.1:
    /// (status, body, negotiated ALPN protocol).
    pub async fn post(&self, path: &str, body: Vec<u8>, h2: bool) -> (u16, Vec<u8>, Vec<u8>) {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = self.connect_tls(alpn).await.expect("TLS handshake");
        let protocol = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
        let request =
            hyper::Request::post(format!("https://127.0.0.1:{}{path}", self.https.port()))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body, protocol)
    }

    /// POSTs a JSON fixture from tests/data/admission and parses the answer.
    pub async fn review(&self, path: &str, fixture: &str, h2: bool) -> (u16, serde_json::Value) {
        let (status, body, _) = self.post(path, fixture_bytes(fixture), h2).await;
        let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        (status, value)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bytes of tests/data/admission/<name>.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/admission")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_pair(dir: &Path, cert: &TestCert) {
    for (name, text) in [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)] {
        let temp = dir.join(format!(".{name}.{}", super::unique()));
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, dir.join(name)).unwrap();
    }
}

/// A one-shot HTTP/1.1 GET: (status, body); status 0 when nothing answered.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads until the peer closes (or errors); `None` when it is still open at `timeout`.
pub async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok()?;
    Some(out)
}

/// Lossy UTF-8 of a response, for messages and assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
