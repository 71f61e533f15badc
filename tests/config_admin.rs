//! `[admin]` and `--admin-socket`: defaults, explicit values, the token rule, located errors.

use std::path::PathBuf;

use ringlb::config::defaults::DEFAULT_ADMIN_SOCKET;
use ringlb::config::*;

const MASK: &[usize] = &[0, 1];

const BASE: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"
pool = "web"
[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9001"
"#;

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &Overrides::default())
}

fn error(text: &str) -> String {
    match load(text) {
        Ok(config) => panic!("expected an error, got {:?}", config.admin),
        Err(e) => e.to_string(),
    }
}

#[test]
fn left_out_it_is_the_default_socket_and_no_tcp() {
    let config = load(BASE).expect("valid");
    assert_eq!(
        config.admin.socket,
        AdminSocket::Default(PathBuf::from(DEFAULT_ADMIN_SOCKET))
    );
    assert_eq!(config.admin.listen, None);
    assert_eq!(config.admin.token, None);
    assert_eq!(config.admin, Admin::default());
    let summary = config.summary_in(MASK);
    assert!(
        summary.contains(&format!(
            "admin: socket {DEFAULT_ADMIN_SOCKET} (default), no tcp"
        )),
        "{summary}"
    );
}

#[test]
fn explicit_values_are_kept_and_the_token_is_not_printed() {
    let text = format!(
        "[admin]\nsocket = \"/tmp/x/admin.sock\"\nlisten = \"10.1.2.3:9900\"\n\
         token = \"s3cret-token\"\n{BASE}"
    );
    let config = load(&text).expect("valid");
    assert_eq!(
        config.admin.socket,
        AdminSocket::Given("/tmp/x/admin.sock".into())
    );
    assert_eq!(
        config.admin.listen,
        Some("10.1.2.3:9900".parse().expect("literal"))
    );
    assert_eq!(config.admin.token.as_deref(), Some("s3cret-token"));
    let summary = config.summary_in(MASK);
    assert!(
        summary.contains("admin: socket /tmp/x/admin.sock, tcp 10.1.2.3:9900 (token set)"),
        "{summary}"
    );
    assert!(!summary.contains("s3cret"), "{summary}");
}

#[test]
fn an_empty_socket_turns_it_off() {
    let config = load(&format!("[admin]\nsocket = \"\"\n{BASE}")).expect("valid");
    assert_eq!(config.admin.socket, AdminSocket::Off);
    assert!(config.summary_in(MASK).contains("admin: socket off"));
}

#[test]
fn loopback_tcp_needs_no_token() {
    for listen in ["127.0.0.1:9900", "[::1]:9900", "127.0.0.2:0"] {
        let config =
            load(&format!("[admin]\nlisten = \"{listen}\"\n{BASE}")).expect("loopback is fine");
        assert_eq!(config.admin.listen, Some(listen.parse().expect("literal")));
    }
}

#[test]
fn a_token_is_required_beyond_loopback() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9900\"\n{BASE}");
    let message = error(&text);
    assert!(
        message.starts_with("t.toml:2:10: admin.listen: "),
        "{message}"
    );
    assert!(message.contains("admin.token is required"), "{message}");
}

#[test]
fn bad_values_are_located() {
    let message = error(&format!("[admin]\nlisten = \"localhost:80\"\n{BASE}"));
    assert!(
        message.starts_with("t.toml:2:10: admin.listen: bad address"),
        "{message}"
    );
    let message = error(&format!("[admin]\ntoken = \"two words\"\n{BASE}"));
    assert!(
        message.starts_with("t.toml:2:9: admin.token: "),
        "{message}"
    );
    let message = error(&format!("[admin]\ntoken = \"\"\n{BASE}"));
    assert!(
        message.starts_with("t.toml:2:9: admin.token: "),
        "{message}"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_location() {
    let message = error(&format!(
        "[admin]\nsocket = \"/tmp/a.sock\"\npath = \"x\"\n{BASE}"
    ));
    assert!(message.starts_with("t.toml:3:1: "), "{message}");
    assert!(message.contains("unknown field `path`"), "{message}");
}

#[test]
fn the_flag_overrides_the_file_and_can_turn_it_off() {
    let text = format!("[admin]\nsocket = \"/tmp/file.sock\"\n{BASE}");
    let flag = |path: &str| Overrides {
        admin_socket: Some(path.to_owned()),
        ..Overrides::default()
    };
    let config = load_with(&text, &flag("/tmp/flag.sock")).expect("valid");
    assert_eq!(
        config.admin.socket,
        AdminSocket::Given("/tmp/flag.sock".into())
    );
    let config = load_with(&text, &flag("")).expect("valid");
    assert_eq!(config.admin.socket, AdminSocket::Off);
    // The quick form takes it too.
    let backend: BackendSpec = "127.0.0.1:9001".parse().expect("spec");
    let config = Config::from_quick_with("127.0.0.1:8080", &[backend], &flag("/tmp/q.sock"), MASK)
        .expect("valid");
    assert_eq!(
        config.admin.socket,
        AdminSocket::Given("/tmp/q.sock".into())
    );
    // A bad value from the flag names the flag.
    let backend: BackendSpec = "127.0.0.1:9001".parse().expect("spec");
    let message =
        Config::from_quick_with("127.0.0.1:8080", &[backend], &flag(" /tmp/q.sock"), MASK)
            .expect_err("leading space")
            .to_string();
    assert!(
        message.starts_with("command line: admin.socket (--admin-socket): "),
        "{message}"
    );
}

#[test]
fn access_log_is_off_unless_a_path_is_given() {
    let config = load(BASE).expect("valid");
    assert_eq!(config.access_log, None);
    assert!(config.summary_in(MASK).contains("access log: off"));
    let off = format!("[access_log]\npath = \"\"\n{BASE}");
    assert_eq!(load(&off).expect("valid").access_log, None);
}

#[test]
fn access_log_path_format_and_flags() {
    let file = format!("[access_log]\npath = \"/var/log/x.log\"\nformat = \"json\"\n{BASE}");
    let config = load(&file).expect("valid");
    assert_eq!(
        config.access_log,
        Some(AccessLog {
            target: LogTarget::File("/var/log/x.log".into()),
            format: LogFormat::Json,
        })
    );
    assert!(
        config
            .summary_in(MASK)
            .contains("access log: /var/log/x.log (json)")
    );
    let flags = Overrides {
        access_log: Some("stderr".into()),
        access_log_format: Some(raw::LogFormatName::Text),
        ..Overrides::default()
    };
    let config = load_with(&file, &flags).expect("valid");
    assert_eq!(
        config.access_log,
        Some(AccessLog {
            target: LogTarget::Stderr,
            format: LogFormat::Text,
        })
    );
    assert!(
        config
            .summary_in(MASK)
            .contains("access log: stderr (text)")
    );
    let off = Overrides {
        access_log: Some(String::new()),
        access_log_format: None,
        ..Overrides::default()
    };
    let text = format!("[access_log]\npath = \"/var/log/x.log\"\n{BASE}");
    assert_eq!(load_with(&text, &off).expect("valid").access_log, None);
}

#[test]
fn access_log_errors_are_located() {
    let e = error(&format!("[access_log]\nformat = \"json\"\n{BASE}"));
    assert!(e.contains("t.toml:2:10"), "{e}");
    assert!(e.contains("access_log.format"), "{e}");
    assert!(e.contains("access_log.path is not"), "{e}");
    let e = error(&format!("[access_log]\npath = \" /x.log\"\n{BASE}"));
    assert!(e.contains("t.toml:2:8"), "{e}");
    assert!(e.contains("access_log.path"), "{e}");
    let e = error(&format!(
        "[access_log]\npath = \"/x\"\nformat = \"xml\"\n{BASE}"
    ));
    assert!(e.contains("access_log"), "{e}");
    assert!(e.contains("xml"), "{e}");
    let e = error(&format!("[access_log]\nfile = \"/x\"\n{BASE}"));
    assert!(e.contains("unknown field"), "{e}");
}
