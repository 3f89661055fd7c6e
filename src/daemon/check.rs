//! `statesync check --config FILE [--id N]`: everything a node needs at start, checked without
//! starting it, like `keepalived -t`: the config, each node's key file, its addresses
//! (parsed, and bindable where they are local), the admin socket and state directories, the
//! admin token file and the hook commands. Exit 0 when all is well, 2 naming every problem.
//!
//! The checks call the same code the daemon runs at start (`DeploymentConfig::load_keys`,
//! `check_socket_dir`, `AdminConfig::read_token`), so that `check` and a start cannot disagree.

use super::admin::config::check_socket_dir;
use super::config::{DeploymentConfig, NodeKind, load};
use crate::proto::NodeId;
use std::ffi::CString;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Deployment config (TOML, shared by every node).
    #[arg(long)]
    pub config: PathBuf,
    /// Check only this node, as started on this host: its addresses must then be local.
    /// Without it every node is checked, and addresses of other hosts are skipped.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// The node(s) will run with --insecure: no key files needed.
    #[arg(long)]
    pub insecure: bool,
}

/// `statesync check`.
pub fn run_check(a: CheckArgs) -> ExitCode {
    let cfg = match load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("statesync check: {e}");
            return ExitCode::from(2);
        }
    };
    let report = check(&cfg, a.id, a.insecure);
    for line in &report.notes {
        println!("{line}");
    }
    if report.problems.is_empty() {
        println!("{}: OK", cfg.path.display());
        ExitCode::SUCCESS
    } else {
        for p in &report.problems {
            eprintln!("statesync check: {}: {p}", cfg.path.display());
        }
        eprintln!(
            "statesync check: {} problem(s) found",
            report.problems.len()
        );
        ExitCode::from(2)
    }
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// What would stop a node from starting (or make it start unsafely).
    pub problems: Vec<String>,
    /// What was checked or skipped, for the operator.
    pub notes: Vec<String>,
}

/// Checks node `only` (or every node) of an already parsed config.
pub fn check(cfg: &DeploymentConfig, only: Option<NodeId>, insecure: bool) -> Report {
    let mut r = Report::default();
    let ids: Vec<NodeId> = match only {
        Some(id) if cfg.node(id).is_none() => {
            r.problems
                .push(format!("--id {id}: no control unit or client with this id"));
            return r;
        }
        Some(id) => vec![id],
        None => cfg.nodes().map(|n| n.id).collect(),
    };
    let must_be_local = only.is_some();
    for &id in &ids {
        let Some((kind, spec)) = cfg.node(id) else {
            continue;
        };
        // Keys: exactly what the daemon loads (exists, 0600, this node's, every peer).
        if !insecure {
            match cfg.load_keys(id) {
                Ok(Some(_)) => {}
                Ok(None) => r.problems.push(format!(
                    "node {id}: no [security] key_dir: run `statesync keygen`, or start with --insecure"
                )),
                Err(e) => r.problems.push(format!("node {id}: keys: {e}")),
            }
        }
        let field = match kind {
            NodeKind::ControlUnit { index } => format!("control_units[{index}]"),
            NodeKind::Client => {
                let i = cfg
                    .clients
                    .iter()
                    .position(|c| c.node.id == id)
                    .unwrap_or(0);
                format!("clients[{i}]")
            }
        };
        bind_check(
            &mut r,
            &format!("node {id}: {field}.addr"),
            spec.addr,
            must_be_local,
            Proto::Udp,
        );
        if let Some(a) = spec.admin {
            bind_check(
                &mut r,
                &format!("node {id}: {field}.admin"),
                a,
                must_be_local,
                Proto::Udp,
            );
        }
        if let Some(m) = cfg.metrics.listen_of(id) {
            bind_check(
                &mut r,
                &format!("node {id}: metrics listen"),
                m,
                must_be_local,
                Proto::Tcp,
            );
        }
        if let Some(e) = admin_socket_problem(cfg, id) {
            r.problems.push(format!("node {id}: {e}"));
        }
    }
    if let Some(dir) = &cfg.state_dir {
        if let Some(e) = dir_problem("state.dir", dir) {
            r.problems.push(e);
        }
    } else {
        r.notes.push(
            "note: no [state] dir: a restarted control unit does not remember its epoch, and `statesync node` refuses to run a control unit".into(),
        );
    }
    if let Err(e) = cfg.admin.read_token() {
        r.problems.push(e);
    }
    for (field, cmd) in cfg.hooks.commands() {
        if let Some(e) = command_problem(cmd) {
            r.problems.push(format!("{field}: {e}"));
        }
    }
    r
}

#[derive(Clone, Copy)]
enum Proto {
    Udp,
    Tcp,
}

/// Binds `addr` for a moment. Not local: a problem only when the node must run here.
fn bind_check(r: &mut Report, what: &str, addr: SocketAddr, must_be_local: bool, p: Proto) {
    let res = match p {
        Proto::Udp => UdpSocket::bind(addr).map(drop),
        Proto::Tcp => TcpListener::bind(addr).map(drop),
    };
    match res {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable && !must_be_local => {
            r.notes.push(format!(
                "{what}: {addr} is not an address of this host: skipped"
            ));
        }
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => r.problems.push(format!(
            "{what}: {addr} is not an address of this host: {e}"
        )),
        Err(e) if e.kind() == ErrorKind::AddrInUse => r.problems.push(format!(
            "{what}: {addr} is already in use (is this node already running?)"
        )),
        Err(e) => r.problems.push(format!("{what}: cannot bind {addr}: {e}")),
    }
}

/// The admin socket's directory: as the daemon will create and check it.
fn admin_socket_problem(cfg: &DeploymentConfig, id: NodeId) -> Option<String> {
    let path = cfg.admin.socket_path(id);
    let dir = path.parent().unwrap_or(Path::new("."));
    if dir.exists() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if let Err(e) = check_socket_dir(dir, uid) {
            return Some(e);
        }
        if !writable(dir) {
            return Some(format!(
                "admin.socket_dir: {} is not writable by this user",
                dir.display()
            ));
        }
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())
        {
            return Some(format!(
                "admin socket {}: exists and is not a socket",
                path.display()
            ));
        }
        None
    } else {
        creatable("admin.socket_dir", dir)
    }
}

/// A directory the node writes: there and writable, or creatable.
fn dir_problem(field: &str, dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Some(format!("{field}: {} is not a directory", dir.display())),
        Ok(_) if !writable(dir) => Some(format!(
            "{field}: {} is not writable by this user",
            dir.display()
        )),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
            creatable(field, dir)
        }
        Err(e) => Some(format!("{field}: {}: {e}", dir.display())),
    }
}

/// A missing directory is created at start: its nearest existing ancestor must allow that.
fn creatable(field: &str, dir: &Path) -> Option<String> {
    let mut up = dir.parent();
    while let Some(p) = up {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        match std::fs::metadata(p) {
            Ok(m) if !m.is_dir() => {
                return Some(format!(
                    "{field}: cannot create {}: {} is not a directory",
                    dir.display(),
                    p.display()
                ));
            }
            Ok(_) if !writable(p) => {
                return Some(format!(
                    "{field}: cannot create {}: {} is not writable by this user",
                    dir.display(),
                    p.display()
                ));
            }
            Ok(_) => return None,
            Err(_) => up = p.parent(),
        }
    }
    None
}

/// Whether this process may create entries in `dir` (write and search permission).
fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// A hook's program (its first word) must exist and be executable. A command line that starts
/// with shell syntax (an assignment, a quote, a builtin that is no file) is left to the shell.
fn command_problem(cmd: &str) -> Option<String> {
    let first = cmd.split_whitespace().next()?;
    if first.contains(['=', '"', '\'', '$', '(', '{', ';', '|', '&', '<', '>']) {
        return None;
    }
    let candidates: Vec<PathBuf> = if first.contains('/') {
        vec![PathBuf::from(first)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(first)).collect())
            .unwrap_or_default()
    };
    let runnable = |p: &PathBuf| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if candidates.iter().any(runnable) {
        return None;
    }
    // `exit`, `echo` and friends may be shell builtins with no file.
    const BUILTINS: [&str; 8] = ["exit", "echo", "true", "false", "test", "[", "printf", ":"];
    if BUILTINS.contains(&first) {
        return None;
    }
    Some(if first.contains('/') {
        format!("{first}: not found or not executable")
    } else {
        format!("{first}: not found in PATH")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_programs_are_looked_up() {
        assert_eq!(command_problem("/bin/sh -c true"), None);
        assert_eq!(command_problem("sh -c true"), None);
        assert_eq!(command_problem("echo x > /tmp/y"), None);
        assert_eq!(command_problem("A=1 thing"), None);
        let e = command_problem("/nonexistent/notify.sh primary").unwrap();
        assert!(e.contains("/nonexistent/notify.sh"), "{e}");
        assert!(command_problem("no-such-program-here").is_some());
    }

    #[test]
    fn directories_are_checked() {
        let base = std::env::temp_dir().join(format!("statesync-check-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        assert_eq!(dir_problem("state.dir", &base), None);
        assert_eq!(dir_problem("state.dir", &base.join("a/b")), None);
        let file = base.join("f");
        std::fs::write(&file, "").unwrap();
        let e = dir_problem("state.dir", &file).unwrap();
        assert!(e.contains("not a directory"), "{e}");
        let e = dir_problem("state.dir", &file.join("sub")).unwrap();
        assert!(e.contains("not a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
