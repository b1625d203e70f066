//! What every command needs: the parsed command line, the output printer,
//! the connection settings, and the deadline-bounded call wrappers that
//! turn failures into etcdctl's errors.

use std::io::Write;
use std::time::Duration;

use crate::cli::Invocation;
use crate::client::{Client, ClientConfig};
use crate::error::CmdError;
use crate::printer::{Format, Printer};

pub struct Ctx {
    pub inv: Invocation,
    pub printer: Printer,
    pub command_timeout: Duration,
    pub config: ClientConfig,
}

impl Ctx {
    /// Reads the global flags (and `ETCDCTL_*`).
    pub fn new(inv: Invocation) -> Result<Ctx, CmdError> {
        let dur = |name: &str| inv.duration(name).map_err(CmdError::error);
        let command_timeout = dur("command-timeout")?;
        let config = ClientConfig {
            endpoints: inv.list("endpoints"),
            dial_timeout: dur("dial-timeout")?,
            keepalive_time: dur("keepalive-time")?,
            keepalive_timeout: dur("keepalive-timeout")?,
            tls: tls_of(&inv),
        };
        let printer = Printer {
            // Checked when the client is made, as etcdctl does.
            format: Format::parse(&inv.string("write-out")).unwrap_or(Format::Simple),
            hex: inv.bool("hex"),
            value_only: false,
        };
        Ok(Ctx {
            inv,
            printer,
            command_timeout,
            config,
        })
    }

    /// Connects as etcdctl's `mustClientFromCmd`: settings that ferroctl
    /// does not serve yet are refused here, before any request.
    pub async fn client(&self) -> Result<Client, CmdError> {
        self.check_settings()?;
        let client = Client::connect(&self.config)
            .await
            .map_err(|e| CmdError::new(crate::error::EXIT_BAD_CONNECTION, e))?;
        self.authenticate(client).await
    }

    /// With `--user`, logs in as clientv3 does when it is created; a
    /// refused login is a connection failure (exit 2), as in etcdctl.
    async fn authenticate(&self, mut client: Client) -> Result<Client, CmdError> {
        let user_flag = self.inv.string("user");
        if user_flag.is_empty() {
            return Ok(client);
        }
        let password_flag = self.inv.string("password");
        let (user, password) = match user_flag.split_once(':') {
            Some((u, p)) if password_flag.is_empty() => (u.to_string(), p.to_string()),
            Some(_) => {
                return Err(CmdError::bad_args(
                    "--user flag contains password while --password is also given",
                ))
            }
            None if !password_flag.is_empty() => (user_flag.clone(), password_flag),
            None => (user_flag.clone(), crate::password::ask("Password: ")),
        };
        let endpoint = client.endpoint().to_string();
        match client
            .authenticate(&user, &password, self.command_timeout)
            .await
        {
            Ok(()) => Ok(client),
            // clientv3 goes on without a token when auth is off.
            Err(e) if e.message() == "etcdserver: authentication is not enabled" => {
                eprint_now(&format!("{}\n", crate::error::retry_warning(&e, &endpoint)));
                Ok(client)
            }
            Err(e) => {
                let mut err = CmdError::rpc(&e, &endpoint);
                err.code = crate::error::EXIT_BAD_CONNECTION;
                Err(err)
            }
        }
    }

    /// A client for one endpoint (commands that visit each endpoint).
    pub async fn client_for(&self, endpoint: &str) -> Result<Client, CmdError> {
        self.check_settings()?;
        let config = ClientConfig {
            endpoints: vec![endpoint.to_string()],
            ..self.config.clone()
        };
        let client = Client::connect(&config)
            .await
            .map_err(|e| CmdError::new(crate::error::EXIT_BAD_CONNECTION, e))?;
        self.authenticate(client).await
    }

    pub fn check_settings(&self) -> Result<(), CmdError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let (lines, fatal) = crate::cli::verify_env(&self.inv, &env);
        for line in &lines {
            eprint_now(&format!("{line}\n"));
        }
        if fatal {
            return Err(CmdError {
                code: crate::error::EXIT_ERROR,
                message: String::new(),
                log: None,
            });
        }
        if Format::parse(&self.inv.string("write-out")).is_none() {
            return Err(CmdError::bad_feature("unsupported output format"));
        }
        if !self.inv.raw("discovery-srv").is_empty() {
            return Err(CmdError::bad_feature(
                "--discovery-srv: DNS discovery is not supported by ferroctl yet",
            ));
        }
        Ok(())
    }

    /// One unary call within `--command-timeout`.
    pub async fn call<Req, Resp>(
        &self,
        client: &Client,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, CmdError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        client
            .unary(path, req, self.command_timeout)
            .await
            .map_err(|e| CmdError::rpc(&e, client.endpoint()))
    }
}

/// Writes to stdout now (watch and keep-alive print as events arrive).
pub fn emit(bytes: &[u8]) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CmdError::new(crate::error::EXIT_IO, e.to_string()))
}

pub fn eprint_now(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// TLS as etcdctl decides it: any of `--cacert/--cert/--key`,
/// `--insecure-skip-tls-verify`, or `--insecure-transport=false`.
fn tls_of(inv: &crate::cli::Invocation) -> Option<crate::client::Tls> {
    let file = |name: &str| {
        let v = inv.raw(name);
        (!v.is_empty()).then(|| v.to_string())
    };
    let tls = crate::client::Tls {
        cacert: file("cacert"),
        cert: file("cert"),
        key: file("key"),
        skip_verify: inv.bool("insecure-skip-tls-verify"),
    };
    let wanted = tls != crate::client::Tls::default() || !inv.bool("insecure-transport");
    wanted.then_some(tls)
}
