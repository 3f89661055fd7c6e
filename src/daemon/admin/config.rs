//! The `[admin]` section of the deployment config and the admin token file.
//!
//! Kept apart from `daemon::config` so that the admin settings change in one place: the
//! deployment config only embeds [`RawAdmin`] and calls [`validate`].

use crate::daemon::config::{ClientSpec, NodeSpec};
use serde::Deserialize;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the Unix admin sockets live when the config names no `admin.socket_dir`.
pub const DEFAULT_SOCKET_DIR: &str = "/run/statesync";

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// A token shorter than this is refused: it could be guessed by a sender that tries many.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Longest token file read: a token is a line, not a document.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// `[admin]` exactly as in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    socket_dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    remote: Option<bool>,
}

/// How every node serves the admin protocol.
///
/// Each node always listens on a Unix stream socket, `<socket_dir>/<id>.sock`, where the
/// kernel tells it who connects (only root, the daemon's own user and the socket's group are
/// served). A UDP listener exists only for a node whose config entry names `admin = "IP:PORT"`:
/// it serves control commands only MAC'd with the token of `token_file`, and never answers an
/// unauthenticated sender with more bytes than it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Directory of the Unix admin sockets (created if missing).
    pub socket_dir: PathBuf,
    /// File holding the token whose MAC a UDP request needs for `takeover` and `switchover`
    /// (`None`: no UDP request can ever run them).
    pub token_file: Option<PathBuf>,
    /// A UDP admin listener may bind a non-loopback address. Off by default, so that a
    /// typo'd address cannot expose the admin protocol to the network.
    pub remote: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            token_file: None,
            remote: false,
        }
    }
}

impl AdminConfig {
    /// Node `id`'s Unix admin socket.
    pub fn socket_path(&self, id: crate::proto::NodeId) -> PathBuf {
        self.socket_dir.join(format!("{id}.sock"))
    }

    /// Reads the token of `token_file` (`Ok(None)` without one). The message names
    /// `admin.token_file`.
    pub fn read_token(&self) -> Result<Option<AdminToken>, String> {
        self.token_file
            .as_ref()
            .map(|p| read_token_file(p, "admin.token_file"))
            .transpose()
    }
}

/// The shared secret that authenticates a UDP admin request, as the key of its MAC
/// (`admin::mac`). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken({} bytes)", self.0.len())
    }
}

impl AdminToken {
    /// A token from its text (fuzzing and tests; a deployment reads `admin.token_file`).
    pub fn from_text(text: &str) -> AdminToken {
        AdminToken(text.to_owned())
    }

    /// The token's text: the key of the requests' HMAC (`admin::mac`); it is never sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads a token file: its first line, surrounding whitespace removed. Refuses a file that
/// other users may read (the token would not be secret), an empty or short token, and a huge
/// file. `field` names the setting in messages (`admin.token_file`, `--token-file`).
pub fn read_token_file(path: &Path, field: &str) -> Result<AdminToken, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{field}: {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{field}: {shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "{field}: {shown} is accessible to every user (mode {mode:03o}); the token must be secret: chmod o-rwx it"
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{field}: {shown} has {} bytes; a token file holds one line (at most {MAX_TOKEN_FILE_BYTES} bytes)",
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{field}: {shown}: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "{field}: {shown}: the token is {} bytes, at least {MIN_TOKEN_BYTES} are needed (e.g. `head -c 24 /dev/urandom | base64`)",
            token.len()
        ));
    }
    Ok(AdminToken(token.to_owned()))
}

/// A relative path in the config is relative to the config file's directory, so that the
/// daemon finds the same file whatever directory it was started from.
fn relative_to_config(config: &Path, p: &Path) -> PathBuf {
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_owned(),
    }
}

/// Checks `[admin]` and the nodes' UDP admin addresses. Every message names the field.
pub fn validate(
    raw: &RawAdmin,
    config_path: &Path,
    control_units: &[NodeSpec],
    clients: &[ClientSpec],
) -> Result<AdminConfig, String> {
    let socket_dir = match &raw.socket_dir {
        Some(d) if d.as_os_str().is_empty() => {
            return Err(
                "admin.socket_dir: empty; name a directory (default /run/statesync)".into(),
            );
        }
        Some(d) => relative_to_config(config_path, d),
        None => PathBuf::from(DEFAULT_SOCKET_DIR),
    };
    let token_file = match &raw.token_file {
        Some(f) if f.as_os_str().is_empty() => {
            return Err("admin.token_file: empty; name a file or leave the key out".into());
        }
        Some(f) => Some(relative_to_config(config_path, f)),
        None => None,
    };
    let cfg = AdminConfig {
        socket_dir,
        token_file,
        remote: raw.remote.unwrap_or(false),
    };
    let nodes = control_units
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("control_units[{i}]"), n))
        .chain(
            clients
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("clients[{i}]"), &c.node)),
        );
    for (field, n) in nodes {
        let path = cfg.socket_path(n.id);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH_BYTES {
            return Err(format!(
                "admin.socket_dir: {} is too long: {field}'s socket {} has {len} bytes, a Unix socket path at most {MAX_SOCKET_PATH_BYTES}",
                cfg.socket_dir.display(),
                path.display()
            ));
        }
        if let Some(a) = n.admin
            && !a.ip().is_loopback()
            && !cfg.remote
        {
            return Err(format!(
                "{field}.admin: {a} is not a loopback address; serving the admin protocol to the network needs `remote = true` in [admin] (prefer the Unix socket in admin.socket_dir)"
            ));
        }
    }
    Ok(cfg)
}

/// Whether the directory that holds the admin sockets is safe to use: a directory, owned by
/// root or by this daemon's user, and not writable by other users (else another user could
/// replace the socket with their own and collect the operator's commands). `uid` is the
/// daemon's effective uid.
pub fn check_socket_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let shown = dir.display();
    let meta = std::fs::metadata(dir).map_err(|e| format!("admin.socket_dir: {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("admin.socket_dir: {shown} is not a directory"));
    }
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(format!(
            "admin.socket_dir: {shown} is owned by uid {}, not by root or this daemon's uid {uid}",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "admin.socket_dir: {shown} is writable by every user (mode {:03o}); use a directory only the daemon's user (and group) may write",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::parse;

    const NODES: &str = r#"
[[control_units]]
id = 1
addr = "127.0.0.1:17101"
[[control_units]]
id = 2
addr = "127.0.0.1:17102"
admin = "127.0.0.1:17002"
[[clients]]
id = 100
addr = "127.0.0.1:17200"
channels = [0]
"#;

    fn err(text: &str) -> String {
        match parse(text, "/etc/statesync/lab.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.message(),
        }
    }

    #[test]
    fn admin_section() {
        // Defaults: the Unix socket in /run/statesync, UDP only where a node asks for it.
        let c = parse(NODES, "/etc/statesync/lab.toml").unwrap();
        assert_eq!(c.admin, AdminConfig::default());
        assert_eq!(c.admin.socket_path(2), Path::new("/run/statesync/2.sock"));
        assert_eq!(c.control_units[0].admin, None);
        assert_eq!(
            c.control_units[1].admin,
            Some("127.0.0.1:17002".parse().unwrap())
        );
        // Relative paths are relative to the config file.
        let text = format!("{NODES}[admin]\nsocket_dir = \"run\"\ntoken_file = \"/k/token\"\n");
        let c = parse(&text, "/etc/statesync/lab.toml").unwrap();
        assert_eq!(c.admin.socket_dir, Path::new("/etc/statesync/run"));
        assert_eq!(c.admin.token_file.as_deref(), Some(Path::new("/k/token")));
        assert!(!c.admin.remote);
        // Errors name the field.
        let e = err(&format!(
            "{NODES}[admin]\nsocket_dir = \"/{}\"\n",
            "d".repeat(100)
        ));
        assert!(
            e.starts_with("admin.socket_dir:") && e.contains("too long"),
            "{e}"
        );
        let e = err(&format!("{NODES}[admin]\nsocket_dir = \"\"\n"));
        assert!(e.starts_with("admin.socket_dir: empty"), "{e}");
        let e = err(&format!("{NODES}[admin]\nsocket = \"x\"\n"));
        assert!(e.contains("socket"), "{e}");
        let remote = NODES.replace("127.0.0.1:17002", "10.1.2.3:17002");
        let e = err(&remote);
        assert!(
            e.starts_with("control_units[1].admin: 10.1.2.3:17002 is not a loopback address")
                && e.contains("remote = true"),
            "{e}"
        );
        let c = parse(&format!("{remote}[admin]\nremote = true\n"), "t").unwrap();
        assert!(c.admin.remote);
        // A missing token file is found when the daemon starts (it may be provisioned later).
        let c = parse(
            &format!("{NODES}[admin]\ntoken_file = \"/nonexistent/t\"\n"),
            "t",
        )
        .unwrap();
        let e = c.admin.read_token().unwrap_err();
        assert!(e.starts_with("admin.token_file: /nonexistent/t"), "{e}");
    }

    #[test]
    fn token_debug_hides_it() {
        let t = AdminToken("0123456789abcdef".into());
        assert_eq!(format!("{t:?}"), "AdminToken(16 bytes)");
    }

    #[test]
    fn token_file_rules() {
        let dir = std::env::temp_dir().join(format!("statesync-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        let write = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("  s3cret-s3cret-s3cret \nignored\n", 0o600);
        let t = read_token_file(&f, "admin.token_file").unwrap();
        assert_eq!(t.as_str(), "s3cret-s3cret-s3cret");
        write("s3cret-s3cret-s3cret\n", 0o644);
        let e = read_token_file(&f, "admin.token_file").unwrap_err();
        assert!(
            e.starts_with("admin.token_file:") && e.contains("mode 644"),
            "{e}"
        );
        write("short\n", 0o640);
        let e = read_token_file(&f, "--token-file").unwrap_err();
        assert!(
            e.starts_with("--token-file:") && e.contains("at least 16"),
            "{e}"
        );
        let e = read_token_file(&dir.join("missing"), "admin.token_file").unwrap_err();
        assert!(e.starts_with("admin.token_file:"), "{e}");
        let e = check_socket_dir(&f, 0).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket_dir(&dir, 0).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        check_socket_dir(&dir, me).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
