//! `statesync drill`: real processes, real sockets, real crashes. It starts the primary, the
//! standby and N clients as separate daemons (optionally each in its own network namespace),
//! drives load through a separate load-client process, kills the primary with SIGKILL at a
//! random moment, and measures detection and recovery from the daemons' own timestamps. It then
//! checks that every client converged to the new primary, that every op committed before the
//! kill survived (see [`capture_commits`] for how that set is taken at the kill), restarts the
//! old primary (it rejoins as standby), compares its full state with the new primary's, and
//! repeats. A round that fails, even one that cannot start, is reported as a failed round.

use super::drill_checks::{self, DryRunCheck, HookRecord};
use crate::cli::say;
use crate::daemon::admin::status::{ChannelStatus, CounterStatus, StatusReply};
use crate::proto::InjectedBug;
use crate::rng::SplitMix64;
use serde_json::{Value, json};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// Failovers to run.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Line cards (client daemons) in the lab.
    #[arg(long, default_value_t = 3)]
    pub clients: u32,
    /// Channels per client.
    #[arg(long, default_value_t = 4)]
    pub channels_per_client: u32,
    /// Load, in changes per second (20000, 20k, 1.5M).
    #[arg(long, default_value = "20000", value_parser = crate::cli::units::parse_per_second)]
    pub rate: f64,
    /// Each node in its own network namespace (needs root; uses tools/lab-up.sh's layout).
    #[arg(long)]
    pub netns: bool,
    /// What each round does to the cluster.
    #[arg(long, value_enum, default_value_t = Variant::KillPrimary)]
    pub variant: Variant,
    /// Control units in the config, in priority order: the first starts as primary, the others
    /// as standbys. With 3 or more a takeover needs a majority vote.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=4))]
    pub control_units: u32,
    /// Load only channels 0..N (default: all), so that at most N channels can be out of sync.
    #[arg(long)]
    pub load_channels: Option<u32>,
    /// out-of-sync: sections the load touches after the state is filled.
    #[arg(long, default_value_t = 4)]
    pub load_sections: u8,
    /// Heartbeat interval of every node, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_ms: u64,
    /// Silence after which a standby declares the primary lost, in milliseconds (the drop
    /// timeout is twice this).
    #[arg(long, default_value_t = 50)]
    pub failover_timeout_ms: u64,
    /// Also write the report (every round's figures) as JSON to FILE; a bare `--json` prints
    /// it on standard output (the text report then goes to standard error).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = crate::cli::JSON_STDOUT)]
    pub json: Option<PathBuf>,
    /// Draw the first round that finished into this SVG: its events on a time axis (from the
    /// daemons' logs and status replies) and the bytes replayed per channel.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Seed of the drill's random choices (how long each round loads before the fault, which
    /// line card a line-card variant restarts) and of the injected network faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long a round waits for clients (and then the rejoined standby) to converge before
    /// it reports differing digests.
    #[arg(long, default_value_t = 20_000)]
    pub converge_timeout_ms: u64,
    /// Keep the work directory (configs and daemon logs).
    #[arg(long)]
    pub keep: bool,
    /// Test aid: start every daemon with this planted protocol bug (`--inject-bug` of
    /// `primary|standby|client`), to prove the drill's checks catch it; e.g.
    /// `discard-committed` must show committed ops lost.
    #[arg(long, value_name = "NAME", default_value = "none")]
    pub inject_bug: InjectedBug,
    /// Where the control units' role-change hooks write one file per transition (default: the
    /// work directory's `hooks/`). Every round checks that the new primary's `on_primary` ran.
    #[arg(long, value_name = "DIR")]
    pub hook_dir: Option<PathBuf>,
    /// Run the daemons and the load client without frame authentication (for comparison; by
    /// default the drill writes fresh keys for every link into its work directory).
    #[arg(long)]
    pub insecure: bool,
}

/// The namespace lab's scripts, built into the binary so that a `cargo install`ed drill has
/// them wherever it runs (`tools/` holds the same files, for running them by hand).
const LAB_SCRIPTS: [(&str, &str); 2] = [
    ("lab-up.sh", include_str!("../../tools/lab-up.sh")),
    ("lab-down.sh", include_str!("../../tools/lab-down.sh")),
];

/// Writes the lab's scripts into `dir/lab/` (lab-up.sh runs lab-down.sh from beside it) and
/// returns the path of `name`.
fn lab_script(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let lab = dir.join("lab");
    std::fs::create_dir_all(&lab).map_err(|e| format!("{}: {e}", lab.display()))?;
    for (file, text) in LAB_SCRIPTS {
        std::fs::write(lab.join(file), text).map_err(|e| format!("{file}: {e}"))?;
    }
    Ok(lab.join(name))
}

/// Changes per second that fill every channel before an out-of-sync round (the same state size
/// whatever the round then churns).
const PREFILL_RATE: f64 = 40_000.0;

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Node {
    id: u32,
    /// A control unit's first command line (restart-primary restarts it so); empty for clients.
    first_args: &'static [&'static str],
    ns: Option<String>,
    addr: SocketAddr,
    /// The node's Unix admin socket: on the filesystem, so the drill reaches it from the root
    /// namespace whichever network namespace the node runs in.
    admin: PathBuf,
    child: Option<Child>,
}

struct Lab {
    exe: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    netns: bool,
    cus: Vec<Node>,
    clients: Vec<Node>,
    load: Option<Child>,
    inject: InjectedBug,
    insecure: bool,
    /// Where the role-change hooks write their files.
    hooks: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.cus.iter_mut().chain(self.clients.iter_mut()) {
            if let Some(c) = &mut n.child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(l) = &mut self.load {
            let _ = l.kill();
            let _ = l.wait();
        }
    }
}

/// Sets a lab node's link up or down (a partition in the namespace lab).
fn link(ns: &str, state: &str) -> Result<(), String> {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "link", "set", "eth0", state])
        .status();
    if ok.is_ok_and(|s| s.success()) {
        Ok(())
    } else {
        Err(format!("ip link set eth0 {state} in {ns} failed"))
    }
}

/// `n` distinct free loopback UDP ports. Every socket is held until all are picked: one
/// released before the next bind can be handed out again, and two nodes on one address fail
/// the config check before the drill starts (a 1-in-thousands CI failure with no output).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let held = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("picking {n} free loopback ports: {e}"))?;
    held.iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("picking {n} free loopback ports: {e}"))
}

impl Lab {
    fn command(&self, ns: &Option<String>) -> Command {
        match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        }
    }

    fn spawn(&mut self, cu: bool, idx: usize, args: &[&str]) -> Result<(), String> {
        let node = if cu {
            &self.cus[idx]
        } else {
            &self.clients[idx]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{}.log", node.id)))
            .map_err(|e| e.to_string())?;
        let mut cmd = self.command(&node.ns);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(node.id.to_string())
            .arg("--inject-bug")
            .arg(self.inject.name())
            .args(self.insecure.then_some("--insecure"))
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting node {}: {e}", node.id))?;
        if cu {
            self.cus[idx].child = Some(child);
        } else {
            self.clients[idx].child = Some(child);
        }
        Ok(())
    }

    /// One admin request, over the node's Unix socket (in a namespace lab too: the socket is
    /// a file, reachable from any network namespace).
    fn admin(&self, path: &Path, req: &Value) -> Result<Value, String> {
        crate::daemon::admin::request_unix(path, req, Duration::from_millis(300))
            .map_err(|e| e.to_string())
    }

    /// The node's whole status (every channel: over the Unix socket a status is never cut).
    fn status(&self, admin: &Path) -> Option<StatusReply> {
        let target = crate::daemon::admin::Target::Unix(admin.to_owned());
        crate::daemon::admin::status::fetch(&target, None, Duration::from_millis(300)).ok()
    }

    /// `failover --dry-run` against control unit `idx`, over the Unix sockets.
    fn dry_run(&self, idx: usize) -> Result<crate::daemon::admin::dry_run::DryRunReply, String> {
        let cfg = crate::daemon::config::load(&self.config).map_err(|e| e.to_string())?;
        crate::daemon::admin::dry_run::preview(
            &cfg,
            self.cus[idx].id,
            None,
            Duration::from_millis(300),
        )
    }

    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Lab) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ok(self) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("timed out after {timeout:?} waiting for {what}"))
    }
}

fn write_config(lab: &Lab, args: &DrillArgs, loss: f64) -> Result<(), String> {
    let mut s = String::new();
    for n in &lab.cus {
        s += &format!(
            "[[control_units]]\nid = {}\naddr = \"{}\"\n\n",
            n.id, n.addr
        );
    }
    for (i, n) in lab.clients.iter().enumerate() {
        let chans: Vec<String> = (0..args.channels_per_client)
            .map(|k| (i as u32 * args.channels_per_client + k).to_string())
            .collect();
        s += &format!(
            "[[clients]]\nid = {}\naddr = \"{}\"\nchannels = [{}]\n\n",
            n.id,
            n.addr,
            chans.join(", ")
        );
    }
    s += "[submitters]\nids = [900]\n\n";
    s += &format!(
        "[admin]\nsocket_dir = {:?}\n\n",
        lab.dir.join("sock").display().to_string()
    );
    s += &format!(
        "[timing]\nheartbeat_ms = {}\nfailover_timeout_ms = {}\ndrop_timeout_ms = {}\nquery_timeout_ms = {}\nrto_ms = 20\n\n",
        args.heartbeat_ms,
        args.failover_timeout_ms,
        args.failover_timeout_ms * 2,
        args.failover_timeout_ms.max(40)
    );
    s += "[protocol]\ncut_policy = \"complete\"\nwindow_ops = 8192\nmax_datagram_bytes = 1472\n";
    if !lab.insecure {
        s += "\n[security]\nkey_dir = \"keys\"\n";
    }
    if args.variant == Variant::OutOfSync {
        // Small socket buffers: what a frozen standby misses is really lost to it (not queued
        // for when it resumes), so clients end up ahead of it.
        s += "\n[runtime]\nrcvbuf_bytes = 65536\n";
    }
    if loss > 0.0 {
        s += &format!(
            "\n[faults]\ndrop = {loss}\nduplicate = {}\nreorder = {loss}\nseed = {}\n",
            loss / 2.0,
            args.seed
        );
    }
    s += &drill_checks::hooks_config(&lab.hooks);
    std::fs::write(&lab.config, s).map_err(|e| e.to_string())?;
    if !lab.insecure {
        let cfg = crate::daemon::config::load(&lab.config).map_err(|e| e.to_string())?;
        crate::daemon::cli::write_keys(&cfg, &lab.dir.join("keys"))?;
    }
    Ok(())
}

fn role(v: &Option<StatusReply>) -> String {
    v.as_ref().map_or("down", |s| s.role_str()).to_string()
}

fn epoch(v: &Option<StatusReply>) -> Option<u64> {
    v.as_ref().map(|s| s.epoch)
}

/// A control unit's channel's highest assigned op (`next_op - 1`) and commit watermark.
fn next_and_commit(c: &ChannelStatus) -> (u64, u64) {
    (c.next_op.unwrap_or(0), c.commit.unwrap_or(0))
}

#[derive(Debug, Default, Clone)]
struct Round {
    round: u32,
    control_units: u32,
    killed: u32,
    /// double-fault: the successor killed while taking over, and the role it was caught in.
    successor_killed: Option<u32>,
    successor_killed_as: Option<String>,
    new_primary: u32,
    detection_ms: f64,
    recovery_ms: f64,
    out_of_sync_channels: u32,
    out_of_sync_clients: Vec<u32>,
    replayed_bytes: u64,
    full_resync_bytes: u64,
    committed_checked: u64,
    /// Committed ops older than the new primary's history reaches: not checkable.
    committed_beyond_history: u64,
    lost_committed: u64,
    digests_equal: bool,
    rejoined: bool,
    /// The rejoined standby's full digest equals the new primary's on every channel.
    standby_digests_equal: bool,
    stale_fenced: Option<bool>,
    /// Bytes the new primary transferred to the standbys that neither died nor took over, from
    /// the kill until they were back in its sync set (3+ units; none where unattributable).
    standby_transfer_bytes: Option<u64>,
    /// restart-primary: the new primary still leads its epoch after the old one came back.
    primary_undisturbed: Option<bool>,
    /// The new primary's `on_primary` hook wrote its file for the new epoch.
    primary_hook: Option<bool>,
    /// Every transition the hooks wrote during the round.
    hook_transitions: Vec<HookRecord>,
    /// out-of-sync: the dry run taken as the standby resumed, against what it then did.
    dry_run: Option<DryRunCheck>,
    /// Why the round failed before it could finish (then nothing else in it counts).
    error: Option<String>,
    /// With `--plot`: the round's measured events.
    timeline: Option<crate::cli::plot::FailoverTimeline>,
}

pub fn run(args: DrillArgs) -> ExitCode {
    crate::cli::claim_stdout_for_json(args.json.as_deref());
    match drill(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("statesync drill: {e}");
            ExitCode::from(2)
        }
    }
}

/// What a drill round does to the cluster (`--variant`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Freeze the primary, read the committed set, kill it; the standby takes over.
    KillPrimary,
    /// Freeze (or, in the namespace lab, cut off) the primary and let it come back with its
    /// stale epoch: it must be fenced and change no client.
    StalePrimary,
    /// Kill and rejoin a standby first (the primary carries on), then kill the primary.
    KillStandby,
    /// Kill the primary, then a line card while the new primary may be replaying to it.
    KillClientInReplay,
    /// Kill the primary with 1 % loss, duplication and reordering on every link.
    Loss,
    /// Freeze the standby for the failover timeout under load, then kill the primary as the
    /// standby resumes, so clients are ahead of it on every loaded channel; the failover
    /// dry run taken then is checked against what the failover did.
    OutOfSync,
    /// Kill the successor too while it takes over; a third unit must (3+ control units).
    DoubleFault,
    /// The killed primary restarts with its first command line, not `--rejoin`.
    RestartPrimary,
}

impl Variant {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::KillPrimary => "kill-primary",
            Variant::StalePrimary => "stale-primary",
            Variant::KillStandby => "kill-standby",
            Variant::KillClientInReplay => "kill-client-in-replay",
            Variant::Loss => "loss",
            Variant::OutOfSync => "out-of-sync",
            Variant::DoubleFault => "double-fault",
            Variant::RestartPrimary => "restart-primary",
        }
    }
}

pub fn drill(args: &DrillArgs) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("statesync-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let variant = args.variant.name();
    if variant == "double-fault" && args.control_units < 3 {
        return Err(format!(
            "--variant double-fault needs --control-units 3 or more (got {}): a third unit must take over",
            args.control_units
        ));
    }
    if args.netns {
        let lab_up = lab_script(&dir, "lab-up.sh")?;
        let st = Command::new("bash")
            .arg(&lab_up)
            .arg(args.clients.to_string())
            .arg(args.control_units.to_string())
            .stdout(Stdio::null())
            .status();
        if !st.is_ok_and(|s| s.success()) {
            return Err(format!(
                "{} failed (needs root and iproute2)",
                lab_up.display()
            ));
        }
    }
    // On loopback each node has its own port (`slot`: the node's place, control units first).
    let ports = if args.netns {
        Vec::new()
    } else {
        free_ports((args.control_units + args.clients) as usize)?
    };
    let mk = |id: u32, ns: Option<String>, host: u8, slot: usize| -> Node {
        let addr = match ns {
            Some(_) => SocketAddr::from(([10, 77, 0, host], 7100)),
            None => SocketAddr::from(([127, 0, 0, 1], ports[slot])),
        };
        Node {
            id,
            first_args: &[],
            ns,
            addr,
            // `admin.socket_dir` of `write_config`.
            admin: dir.join("sock").join(format!("{id}.sock")),
            child: None,
        }
    };
    let ns = |name: String| args.netns.then_some(name);
    let cus = (1..=args.control_units)
        .map(|k| Node {
            // Priority order: the first unit is the initial primary.
            first_args: if k == 1 { &["primary"] } else { &["standby"] },
            ..mk(k, ns(format!("ss-cu{k}")), k as u8, k as usize - 1)
        })
        .collect();
    let clients = (0..args.clients)
        .map(|i| {
            let slot = (args.control_units + i) as usize;
            mk(100 + i, ns(format!("ss-cl{}", i + 1)), 11 + i as u8, slot)
        })
        .collect();
    let mut lab = Lab {
        exe,
        config: dir.join("drill.toml"),
        dir: dir.clone(),
        netns: args.netns,
        cus,
        clients,
        load: None,
        inject: args.inject_bug,
        insecure: args.insecure,
        hooks: args.hook_dir.clone().unwrap_or_else(|| dir.join("hooks")),
    };
    // Absolute: the hooks run wherever the daemons do.
    lab.hooks = std::fs::create_dir_all(&lab.hooks)
        .and_then(|()| std::fs::canonicalize(&lab.hooks))
        .map_err(|e| format!("--hook-dir {}: {e}", lab.hooks.display()))?;
    write_config(&lab, args, if variant == "loss" { 0.01 } else { 0.0 })?;
    for i in 0..lab.cus.len() {
        let first = lab.cus[i].first_args;
        lab.spawn(true, i, first)?;
    }
    for i in 0..lab.clients.len() {
        lab.spawn(false, i, &["client"])?;
    }
    say!(
        "drill: {} rounds, variant {variant}, {} control units, {} clients x {} channels, {} changes/s, heartbeat {} ms, failover timeout {} ms, {}{}",
        args.rounds,
        args.control_units,
        args.clients,
        args.channels_per_client,
        args.rate,
        args.heartbeat_ms,
        args.failover_timeout_ms,
        if args.netns {
            "network namespaces"
        } else {
            "loopback"
        },
        if args.inject_bug == InjectedBug::None {
            String::new()
        } else {
            format!(", planted bug {}", args.inject_bug)
        }
    );
    let mut rng = SplitMix64::new(args.seed);
    let mut rounds = Vec::new();
    for r in 1..=args.rounds {
        let mut restarts = 0;
        let round = loop {
            match run_round(&mut lab, args, variant, r, &mut rng) {
                Err(e) if e.starts_with(ROLES_MOVED) && restarts < MAX_ROUND_RESTARTS => {
                    restarts += 1;
                    say!("round {r:>2}: restarted: {e}");
                    recover(&mut lab);
                }
                done => break done,
            }
        };
        let round = match round {
            Ok(round) => round,
            Err(e) => {
                recover(&mut lab);
                Round {
                    round: r,
                    control_units: args.control_units,
                    error: Some(e),
                    ..Default::default()
                }
            }
        };
        if let Some(e) = &round.error {
            say!("round {:>2}: FAILED: {e}", round.round);
            rounds.push(round);
            continue;
        }
        say!(
            "round {:>2}: killed {}{} -> primary {} | detect {:>6.1} ms recover {:>6.1} ms | out of sync {} ch ({:?}) | replayed {} B vs full {} B{} | committed checked {} lost {} (beyond history {}) | digests {} | rejoined {} (state {}){}{}",
            round.round,
            round.killed,
            round.successor_killed.map_or(String::new(), |k| format!(
                ", then successor {k} as {}",
                round.successor_killed_as.as_deref().unwrap_or("?")
            )),
            round.new_primary,
            round.detection_ms,
            round.recovery_ms,
            round.out_of_sync_channels,
            round.out_of_sync_clients,
            round.replayed_bytes,
            round.full_resync_bytes,
            round
                .standby_transfer_bytes
                .map_or(String::new(), |b| format!(
                    " | standby transfer {b} B vs full {} B",
                    round.full_resync_bytes
                )),
            round.committed_checked,
            round.lost_committed,
            round.committed_beyond_history,
            if round.digests_equal {
                "equal"
            } else {
                "DIFFER"
            },
            round.rejoined,
            if round.standby_digests_equal {
                "equal"
            } else {
                "DIFFERS"
            },
            round
                .stale_fenced
                .map_or(String::new(), |f| format!(" | stale primary fenced {f}")),
            round
                .primary_undisturbed
                .map_or(String::new(), |u| format!(" | new primary undisturbed {u}")),
        );
        say!(
            "  hooks: on_primary of the new primary ran {}; {} transitions written",
            round.primary_hook.unwrap_or(false),
            round.hook_transitions.len()
        );
        if let Some(d) = &round.dry_run {
            if d.missed {
                say!(
                    "  dry run: missed (the standby had started taking over) {}",
                    d.differences.join("; ")
                );
            } else {
                say!(
                    "  dry run: {} of {} channels as predicted ({} answered by their client), predicted replay {} B, replayed {} B",
                    d.matching,
                    d.channels,
                    d.answered,
                    d.predicted_replay_bytes,
                    d.replayed_bytes
                );
                for line in &d.differences {
                    say!("    {line}");
                }
            }
        }
        rounds.push(round);
    }
    if let Some(path) = &args.plot {
        match rounds.iter().find_map(|r| r.timeline.as_ref()) {
            Some(t) => {
                crate::cli::plot::draw_failover(t, path)
                    .map_err(|e| format!("--plot {}: {e}", path.display()))?;
                say!("plot: wrote {}", path.display());
            }
            None => eprintln!("drill --plot: no round finished: nothing drawn"),
        }
    }
    summarize(args, variant, &rounds, &dir)
}

/// After a failed round: no load, nothing left frozen, every daemon that died restarted (a
/// control unit as `standby --rejoin`, a client as `client --fresh`), so that the next round
/// can start from whatever primary the units agree on.
fn recover(lab: &mut Lab) {
    stop_load(lab);
    for i in 0..lab.cus.len() {
        if let Some(ns) = &lab.cus[i].ns {
            let _ = link(ns, "up");
        }
        match lab.cus[i].child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => {
                if let Some(pid) = lab.cus[i].child.as_ref().map(|c| c.id()) {
                    // SAFETY: kill(2) with the pid of our own child, which has not been reaped
                    // (try_wait saw it running), and a valid signal number.
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
            }
            _ => {
                let _ = lab.spawn(true, i, &["standby", "--rejoin"]);
            }
        }
    }
    for i in 0..lab.clients.len() {
        if !matches!(
            lab.clients[i].child.as_mut().map(|c| c.try_wait()),
            Some(Ok(None))
        ) {
            let _ = lab.spawn(false, i, &["client", "--fresh"]);
        }
    }
}

/// The control unit that is primary and its in-sync standbys (highest priority first), once
/// at least `need` units are standbys in its sync set, found by status: the drill never
/// assumes which unit leads. Should two claim to (a stale one not yet fenced), the higher
/// epoch leads.
fn find_roles(lab: &Lab, need: usize, timeout: Duration) -> Result<(usize, Vec<usize>), String> {
    let mut found = None;
    let what = format!("a primary with {need} in-sync standbys");
    let mut last = String::new();
    let waited = lab.wait_for(&what, timeout, |l| {
        let st: Vec<Option<StatusReply>> = l.cus.iter().map(|n| l.status(&n.admin)).collect();
        let roles: Vec<String> = st.iter().map(role).collect();
        let sync_set = |i: usize| {
            st[i]
                .as_ref()
                .and_then(|v| v.sync_set.clone())
                .unwrap_or_default()
        };
        last = (0..l.cus.len())
            .map(|i| format!("{} {} sync set {:?}", l.cus[i].id, roles[i], sync_set(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(p) = (0..l.cus.len())
            .filter(|&i| roles[i] == "primary")
            .max_by_key(|&i| epoch(&st[i]))
        else {
            return false;
        };
        let in_sync: Vec<usize> = (0..l.cus.len())
            .filter(|&i| i != p && roles[i] == "standby" && sync_set(p).contains(&l.cus[i].id))
            .collect();
        if in_sync.len() < need {
            return false;
        }
        found = Some((p, in_sync));
        true
    });
    match (waited, found) {
        (Ok(_), Some(f)) => Ok(f),
        (Err(e), _) => Err(format!("{e} (last seen: {last})")),
        (Ok(_), None) => Err(format!("no {what}")),
    }
}

/// One channel's ops that were committed when the primary stopped: every op `1..=top`, named
/// by epoch through `segments` (`(epoch, first_op)`, as in `History::segments`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    top: u64,
    segments: Vec<(u64, u64)>,
}

impl Committed {
    /// The `(epoch, from, to)` ranges that name every op of `1..=top` the history reaches.
    fn ranges(&self) -> Vec<(u64, u64, u64)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(i, &(epoch, start))| {
                let end = self
                    .segments
                    .get(i + 1)
                    .map_or(self.top, |n| n.1.saturating_sub(1).min(self.top));
                (start.max(1) <= end).then_some((epoch, start.max(1), end))
            })
            .collect()
    }
}

/// Takes, at the moment the primary stopped, the set of ops that must survive the failover.
///
/// A change is committed once the standby has applied it (docs: DESIGN §1); the primary learns
/// of a commit only from the standby's commit report, sent after the apply. So the drill first
/// freezes the primary (SIGSTOP: from that instant nothing is submitted, acked, forwarded or
/// committed any more) and then reads the still-running *standby*: its applied position per
/// channel and its per-channel epoch history, over its admin socket. It reads until two reads
/// agree (what was in flight when the primary froze has then been applied), and fails the
/// round if the standby is no longer a standby of the old epoch (it took over before the read
/// finished: the set would be taken after the cut, which would hide exactly the losses sought).
/// Every op at or below that position is committed, and the set includes every op the primary
/// could have told anyone was committed. Only then is the primary killed.
///
/// (Rejected: the primary cannot answer admin requests while frozen, and having it publish its
/// watermarks into a shared-memory file would add unsafe code to the data path for a test aid
/// and still see less than the standby; the load client gets no commit notes to keep.)
///
/// `field` is `applied` for a standby; the out-of-sync variant, whose standby is the frozen
/// one, reads the running primary's `commit` instead (it cannot advance while the standby is
/// frozen).
fn capture_commits(
    lab: &Lab,
    path: &Path,
    want_role: &str,
    want_epoch: u64,
    field: &str,
) -> Result<Vec<Committed>, String> {
    let admin = path.display();
    let read = || -> Result<Vec<Committed>, String> {
        let st = lab
            .status(path)
            .ok_or_else(|| format!("no status from {admin} while taking the committed set"))?;
        let (r, epoch) = (st.role_str(), st.epoch);
        if r != want_role || epoch != want_epoch {
            return Err(format!(
                "{admin} was {r} in epoch {epoch}, not {want_role} in epoch {want_epoch}, when the committed set was read"
            ));
        }
        if st.channels.len() != st.channels_total as usize || st.channels_truncated.is_some() {
            return Err(format!("{admin}: status incomplete: channels missing"));
        }
        st.channels
            .iter()
            .map(|c| {
                let top = match field {
                    "applied" => Some(c.applied),
                    "commit" => c.commit,
                    _ => None,
                }
                .ok_or_else(|| format!("{admin}: channel status without {field}"))?;
                let segments = history(c, path)?;
                Ok(Committed { top, segments })
            })
            .collect()
    };
    let mut last = read()?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(2));
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err(format!(
        "{admin}: {field} positions kept moving after the primary stopped"
    ))
}

/// A channel status's epoch history: `(epoch, first op)` segments, oldest first.
fn history(channel: &ChannelStatus, admin: &Path) -> Result<Vec<(u64, u64)>, String> {
    let admin = admin.display();
    Ok(channel
        .history
        .as_ref()
        .ok_or_else(|| format!("{admin}: channel status without history"))?
        .iter()
        .map(|&[e, s]| (e, s))
        .collect())
}

/// What [`check_committed`] found.
#[derive(Debug, Default, Clone, Copy)]
struct CommitCheck {
    checked: u64,
    /// Checked and not committed.
    lost: u64,
    /// Not checkable: assigned in an epoch older than the new primary's history reaches (it
    /// keeps `history::MAX_SEGMENTS` epochs per channel, so after that many failovers the
    /// oldest epoch's ops can no longer be named).
    beyond_history: u64,
}

/// Checks every op of `committed` on the new primary with ranged `op_status` requests.
fn check_committed(lab: &Lab, path: &Path, committed: &[Committed]) -> Result<CommitCheck, String> {
    let admin = path.display();
    let st = lab
        .status(path)
        .ok_or_else(|| format!("no status from {admin} to check committed ops"))?;
    let kept: Vec<Vec<(u64, u64)>> = st
        .channels
        .iter()
        .map(|c| history(c, path))
        .collect::<Result<_, _>>()?;
    let mut out = CommitCheck::default();
    for (ch, c) in committed.iter().enumerate() {
        let oldest_kept = kept
            .get(ch)
            .and_then(|h| h.first())
            .map_or(0, |&(epoch, _)| epoch);
        // Ops below the standby's own oldest segment: it could not name them either.
        out.beyond_history += c
            .segments
            .first()
            .map_or(0, |&(_, start)| start.saturating_sub(1).min(c.top));
        for (epoch, from, to) in c.ranges() {
            if epoch < oldest_kept {
                out.beyond_history += to - from + 1;
                continue;
            }
            let q =
                json!({"cmd": "op_status", "channel": ch, "epoch": epoch, "from": from, "to": to});
            let v = lab.admin(path, &q)?;
            let counts = v
                .get("counts")
                .ok_or_else(|| format!("op_status {q} on {admin}: {v}"))?;
            let n = |k: &str| counts.get(k).and_then(Value::as_u64).unwrap_or(0);
            let total = n("committed") + n("pending") + n("discarded") + n("unknown");
            if total != to - from + 1 {
                return Err(format!(
                    "op_status {q} on {admin}: counts {counts} do not add up"
                ));
            }
            out.checked += total;
            out.lost += total - n("committed");
        }
    }
    Ok(out)
}

/// The failover timestamp `key` of a new primary's status; a missing one fails the round.
fn failover_time(st: &StatusReply, key: &str) -> Result<u64, String> {
    let f = st.failover.unwrap_or_default();
    match key {
        "started_unix_us" => f.started_unix_us,
        "finished_unix_us" => f.finished_unix_us,
        _ => None,
    }
    .ok_or_else(|| format!("the new primary's status has no failover.{key}"))
}

/// Freezes (SIGSTOP) or resumes (SIGCONT) a control unit's process.
fn signal(lab: &Lab, idx: usize, sig: i32) -> Result<u32, String> {
    let pid = lab.cus[idx]
        .child
        .as_ref()
        .map(|c| c.id())
        .ok_or_else(|| format!("control unit {} not running", lab.cus[idx].id))?;
    // SAFETY: kill(2) with the pid of our own child (not reaped: we only wait after a kill,
    // and then drop the handle) and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) };
    Ok(pid)
}

fn kill_cu(lab: &mut Lab, idx: usize) {
    if let Some(mut c) = lab.cus[idx].child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Starts the load client on channels `0..channels`, spreading over sections `0..sections`.
fn start_load(lab: &mut Lab, channels: u32, sections: u8, rate: f64) -> Result<(), String> {
    let targets: Vec<String> = lab.cus.iter().map(|n| n.addr.to_string()).collect();
    let ns = if lab.netns {
        Some("ss-lg".to_string())
    } else {
        None
    };
    let mut cmd = lab.command(&ns);
    cmd.args([
        "churn",
        "--connect",
        &targets.join(","),
        "--rate",
        &rate.to_string(),
        "--duration",
        "3600",
        "--channels",
        &channels.to_string(),
        "--keys",
        "65536",
        "--sections",
        &sections.to_string(),
    ]);
    if lab.insecure {
        cmd.arg("--insecure");
    } else {
        cmd.arg("--config").arg(&lab.config);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    lab.load = Some(
        cmd.spawn()
            .map_err(|e| format!("starting the load client: {e}"))?,
    );
    Ok(())
}

fn stop_load(lab: &mut Lab) {
    if let Some(mut l) = lab.load.take() {
        let _ = l.kill();
        let _ = l.wait();
    }
}

/// Starts the error of a round whose roles changed before its kill, by no act of the drill.
const ROLES_MOVED: &str = "roles changed before the kill";

/// How often one round may start over for [`ROLES_MOVED`] before it counts as failed.
const MAX_ROUND_RESTARTS: u32 = 2;

fn run_round(
    lab: &mut Lab,
    args: &DrillArgs,
    variant: &str,
    r: u32,
    rng: &mut SplitMix64,
) -> Result<Round, String> {
    // Every round starts from a whole cluster: a primary and all other units in its sync set
    // (double-fault needs two successors; the standby transfer is measured on in-sync units).
    let (p, in_sync) = find_roles(lab, lab.cus.len() - 1, Duration::from_secs(10))
        .map_err(|e| format!("the round cannot start: {e}"))?;
    // The highest-priority in-sync standby: the one the vote picks when the primary dies.
    let s = in_sync[0];
    let hooks_before = drill_checks::hook_records(&lab.hooks);
    let all = args.clients * args.channels_per_client;
    if variant == "out-of-sync" {
        // Fill every channel's state across all sections first, then churn only the first
        // `--load-channels` channels and `--load-sections` sections: what a failover replays
        // should follow those, not the size of the state.
        start_load(lab, all, 64, PREFILL_RATE)?;
        std::thread::sleep(Duration::from_millis(1000));
        stop_load(lab);
        start_load(
            lab,
            args.load_channels.unwrap_or(all).max(1),
            args.load_sections,
            args.rate,
        )?;
    } else {
        start_load(lab, args.load_channels.unwrap_or(all).max(1), 64, args.rate)?;
    }
    std::thread::sleep(Duration::from_millis(200 + rng.below(400)));
    let old_epoch = lab
        .status(&lab.cus[p].admin)
        .map(|v| v.epoch)
        .ok_or("no primary status before the kill")?;
    // The roles read at the start must still hold: on a loaded machine a standby can time the
    // primary out during the load (an unplanned failover), and a round run on stale roles
    // would freeze a standby and read the new primary as one. Such a round starts over.
    let primary_now = role(&lab.status(&lab.cus[p].admin)) == "primary";
    if !primary_now || !in_sync.iter().all(|&i| in_sync_standby(lab, p, i)) {
        return Err(format!(
            "{ROLES_MOVED}: {} no longer leads epoch {old_epoch} with the same sync set",
            lab.cus[p].id
        ));
    }
    // Transfer counters before the kill: only a primary counts `xfer_bytes`, so the delta of
    // whichever unit takes over is what it transferred after the failover.
    let xfer_before: Vec<Option<u64>> = (0..lab.cus.len()).map(|i| xfer_bytes(lab, i)).collect();
    // For the plot's first accepted submit: what each unit had accepted before the kill.
    let submits_before: Vec<Option<u64>> = (0..lab.cus.len())
        .map(|i| counter(lab, i, |c| c.core.submits_accepted))
        .collect();
    let mut sigkill_us = None;
    let mut restarted_us = None;
    let mut round = Round {
        round: r,
        control_units: lab.cus.len() as u32,
        killed: lab.cus[p].id,
        ..Default::default()
    };
    let stale = variant == "stale-primary";
    if variant == "kill-standby" {
        // A standby crash first (the primary must carry on), then the primary's.
        kill_cu(lab, s);
        lab.spawn(true, s, &["standby", "--rejoin"])?;
        let sid = lab.cus[s].id;
        lab.wait_for(
            "the restarted standby to rejoin",
            Duration::from_secs(20),
            |l| in_sync_standby(l, p, s),
        )
        .map_err(|e| format!("standby {sid}: {e}"))?;
    }
    // When the primary stopped: detection and recovery are measured from here.
    let kill_us;
    let committed;
    let mut predicted = None;
    if variant == "out-of-sync" {
        // The standby is frozen for half the failover timeout under load (the primary keeps
        // it in the sync set, that being shorter than the drop timeout), then the primary is
        // killed as the standby resumes, so clients are ahead of it on every loaded channel.
        // With the standby frozen nothing new commits (a commit needs every member of the
        // sync set): the primary's watermarks are the committed set. Half, so that the
        // standby, which last heard the primary as it froze, waits at least the other half
        // before it takes over: the dry run below is asked within that half.
        let t0 = Instant::now();
        signal(lab, s, libc::SIGSTOP)?;
        let captured = capture_commits(lab, &lab.cus[p].admin, "primary", old_epoch, "commit");
        let left = Duration::from_millis(args.failover_timeout_ms / 2).saturating_sub(t0.elapsed());
        std::thread::sleep(left);
        kill_us = unix_us();
        kill_cu(lab, p);
        signal(lab, s, libc::SIGCONT)?;
        // What `failover --dry-run` predicts now, with the primary gone and the clients
        // still. The standby takes over a failover timeout after it last heard the primary;
        // the 5 ms first let it read what it received before it froze.
        std::thread::sleep(Duration::from_millis(5));
        predicted = Some(lab.dry_run(s));
        committed = captured?;
    } else {
        // Every variant stops the primary the same way first, so that the committed set is
        // taken at that instant (see `capture_commits`).
        kill_us = unix_us();
        match &lab.cus[p].ns {
            // A namespace lab's stale primary is cut off by a real partition instead (it
            // comes back later with its stale epoch and must be fenced); cut off, it can
            // commit nothing more either.
            Some(ns) if stale => link(ns, "down")?,
            _ => {
                signal(lab, p, libc::SIGSTOP)?;
            }
        }
        committed = capture_in_sync(lab, &in_sync, old_epoch)?;
        if !stale {
            sigkill_us = Some(unix_us());
            kill_cu(lab, p);
        }
    }
    let mut killed = vec![p];
    if variant == "double-fault" {
        // The successor is killed at the first status that shows it leading a newer epoch:
        // as `candidate` (still recovering: querying clients, cutting, replaying) when the
        // poll catches it there, else as a fresh `primary` (its candidacy lasts only until
        // every client answered, often shorter than one poll). Which one is reported.
        let mut caught = None;
        lab.wait_for(
            "a successor (candidate or primary) to appear",
            Duration::from_secs(10),
            |l| {
                caught = (0..l.cus.len())
                    .filter(|i| !killed.contains(i))
                    .find_map(|i| {
                        let st = l.status(&l.cus[i].admin);
                        let r = role(&st);
                        let newer = epoch(&st).is_some_and(|e| e > old_epoch);
                        (newer && (r == "candidate" || r == "primary")).then_some((i, r))
                    });
                caught.is_some()
            },
        )?;
        let (u, as_role) = caught.ok_or("no successor seen")?;
        kill_cu(lab, u);
        // Printed now: should no third unit take over, the failed round keeps only its error.
        say!(
            "  double fault: successor {} killed as {as_role}",
            lab.cus[u].id
        );
        killed.push(u);
        round.successor_killed = Some(lab.cus[u].id);
        round.successor_killed_as = Some(as_role);
        // With at most 4 units the N-2 survivors are no majority of N, so no third unit could
        // ever be voted in: both killed units come back now, as a supervisor restarts a
        // crashed daemon (a joining unit votes, though it can never be the successor itself).
        // A restarted unit knows no sync set: it votes only while it hears every other unit
        // of three, so with one of them still down nobody could be elected.
        restarted_us = Some(unix_us());
        lab.spawn(true, p, &["standby", "--rejoin"])?;
        lab.spawn(true, u, &["standby", "--rejoin"])?;
    }
    let np = wait_new_primary(lab, &killed, old_epoch)?;
    round.new_primary = lab.cus[np].id;
    if variant == "kill-client-in-replay" {
        // Crash a client while the new primary may still be replaying to it; it restarts empty.
        let victim = rng.below(lab.clients.len() as u64) as usize;
        if let Some(c) = &mut lab.clients[victim].child {
            let _ = c.kill();
            let _ = c.wait();
        }
        lab.spawn(false, victim, &["client", "--fresh"])?;
    }
    let st = lab.status(&lab.cus[np].admin).ok_or("new primary status")?;
    let started = failover_time(&st, "started_unix_us")?;
    let finished = failover_time(&st, "finished_unix_us")?;
    round.detection_ms = started.saturating_sub(kill_us) as f64 / 1000.0;
    round.recovery_ms = finished.saturating_sub(kill_us) as f64 / 1000.0;
    let load_left = Instant::now();
    let first_submit = if args.plot.is_some() {
        first_accepted_submit(lab, np, submits_before[np].unwrap_or(0), finished)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(300).saturating_sub(load_left.elapsed()));
    stop_load(lab);
    if stale {
        match &lab.cus[p].ns {
            Some(ns) => link(ns, "up")?,
            None => {
                signal(lab, p, libc::SIGCONT)?;
            }
        }
    }
    let st_after = lab.status(&lab.cus[np].admin).ok_or("new primary status")?;
    let mut channel_events = Vec::new();
    for (ch, c) in st_after.channels.iter().enumerate() {
        // What relearning everything would send: every channel's whole state.
        let full = c.state_bytes.unwrap_or(0);
        round.full_resync_bytes += full;
        if let Some(f) = &c.last_failover {
            let bytes = f.replay_bytes + f.resent_bytes;
            round.replayed_bytes += bytes;
            channel_events.push(crate::cli::plot::ChannelEvents {
                channel: ch as u32,
                resolved_us: None,
                resolution: f.resolution.clone(),
                replayed_bytes: bytes,
                full_bytes: full,
            });
            if f.resolution != "in_sync" {
                round.out_of_sync_channels += 1;
                let owner = lab
                    .clients
                    .get(ch / args.channels_per_client as usize)
                    .map_or(0, |n| n.id);
                if !round.out_of_sync_clients.contains(&owner) {
                    round.out_of_sync_clients.push(owner);
                }
            }
        }
    }
    round.dry_run = predicted.map(|p| match p {
        Ok(p) => drill_checks::compare_dry_run(&p, &st_after),
        Err(e) => DryRunCheck {
            missed: true,
            differences: vec![format!("the dry run failed: {e}")],
            ..Default::default()
        },
    });
    // The new primary's on_primary hook ran for its epoch (hooks run off the data path: give
    // it a moment).
    let np_id = lab.cus[np].id;
    round.primary_hook = Some(
        lab.wait_for(
            "the new primary's on_primary hook",
            Duration::from_secs(5),
            |l| {
                drill_checks::hook_records(&l.hooks)
                    .iter()
                    .any(|h| h.node == np_id && h.role == "primary" && h.epoch == st_after.epoch)
            },
        )
        .is_ok(),
    );
    // Every op committed when the primary stopped must still be committed.
    let check = check_committed(lab, &lab.cus[np].admin, &committed)?;
    round.committed_checked = check.checked;
    round.lost_committed = check.lost;
    round.committed_beyond_history = check.beyond_history;
    // The units that neither died nor took over were in sync before the kill: what the new
    // primary transferred until they are back in its sync set went to them (no killed unit
    // is running yet to receive any, except double-fault's old primary, which makes the
    // delta unattributable there).
    let survivors: Vec<usize> = (0..lab.cus.len())
        .filter(|i| !killed.contains(i) && *i != np)
        .collect();
    if !survivors.is_empty() && variant != "double-fault" {
        let _ = lab.wait_for(
            "the surviving standbys to be in sync",
            Duration::from_millis(args.converge_timeout_ms / 2),
            |l| survivors.iter().all(|&i| in_sync_standby(l, np, i)),
        );
        round.standby_transfer_bytes =
            xfer_bytes(lab, np).map(|now| now.saturating_sub(xfer_before[np].unwrap_or(0)));
    }
    if stale {
        // The stale primary must have stepped down without changing any client.
        let fenced = lab.wait_for(
            "the stale primary to step down",
            Duration::from_secs(10),
            |l| {
                let st = l.status(&l.cus[p].admin);
                matches!(role(&st).as_str(), "joining" | "standby")
            },
        );
        let stale_rejects: u64 = lab
            .clients
            .iter()
            .filter_map(|c| lab.status(&c.admin))
            .map(|v| v.counters.core.rejected_stale_epoch)
            .sum();
        round.stale_fenced = Some(fenced.is_ok());
        say!(
            "  stale primary: stepped down {}, client stale-epoch rejections {stale_rejects}",
            fenced.is_ok()
        );
    } else if variant == "restart-primary" {
        // The old primary comes back exactly as it was first started (the initial primary
        // as `primary`, with no state and the first epoch): it must not disrupt the new
        // primary and must end up a standby in sync.
        let first = lab.cus[p].first_args;
        restarted_us = Some(unix_us());
        lab.spawn(true, p, first)?;
    } else {
        // Restart what died (double-fault restarted the old primary already): each rejoins
        // as standby through a state transfer.
        for &k in &killed {
            if lab.cus[k].child.is_none() {
                restarted_us = restarted_us.or(Some(unix_us()));
                lab.spawn(true, k, &["standby", "--rejoin"])?;
            }
        }
    }
    let others: Vec<usize> = (0..lab.cus.len()).filter(|&i| i != np).collect();
    let rejoined = lab.wait_for(
        "every other unit to be a standby in sync",
        Duration::from_secs(20),
        |l| others.iter().all(|&i| in_sync_standby(l, np, i)),
    );
    round.rejoined = rejoined.is_ok();
    if variant == "restart-primary" {
        round.primary_undisturbed = Some(
            lab.status(&lab.cus[np].admin)
                .is_some_and(|v| v.is_primary() && v.epoch == st_after.epoch),
        );
    }
    // Converge: every channel committed through its last op and every client at the same op
    // with the same digest.
    let converge = Duration::from_millis(args.converge_timeout_ms);
    let converged = lab.wait_for("convergence", converge, |l| {
        let Some(st) = l.status(&l.cus[np].admin) else {
            return false;
        };
        let chans = &st.channels;
        if chans.iter().any(|c| {
            let (next, commit) = next_and_commit(c);
            commit + 1 != next
        }) {
            return false;
        }
        l.clients.iter().all(|cl| {
            l.status(&cl.admin).is_some_and(|cs| {
                cs.channels.iter().all(|c| {
                    st.channel(c.channel).is_some_and(|pc| {
                        pc.public_digest == c.public_digest
                            && c.applied + 1 == next_and_commit(pc).0
                    })
                })
            })
        })
    });
    round.digests_equal = converged.is_ok();
    // Every standby (the rejoined ones and the survivors) holds the new primary's whole state
    // (private sections included): the same applied position and full digest on every channel.
    round.standby_digests_equal = round.rejoined
        && lab
            .wait_for(
                "every standby's state to equal the primary's",
                converge / 2,
                |l| {
                    let Some(ps) = l.status(&l.cus[np].admin) else {
                        return false;
                    };
                    let full = |c: &ChannelStatus| (c.applied, c.full_digest.clone());
                    let pc = &ps.channels;
                    others.iter().all(|&i| {
                        l.status(&l.cus[i].admin).is_some_and(|ss| {
                            let sc = &ss.channels;
                            !pc.is_empty()
                                && pc.len() == sc.len()
                                && pc.iter().zip(sc).all(|(a, b)| full(a) == full(b))
                        })
                    })
                },
            )
            .is_ok();
    round.stale_fenced = round.stale_fenced.map(|f| f && round.digests_equal);
    round.hook_transitions = drill_checks::hook_records(&lab.hooks)
        .into_iter()
        .filter(|h| !hooks_before.contains(h))
        .collect();
    if args.plot.is_some() {
        let stopped_how = if variant == "out-of-sync" {
            "killed (SIGKILL)"
        } else if stale && lab.netns {
            "cut off (link down)"
        } else {
            "frozen (SIGSTOP)"
        };
        let mut t = crate::cli::plot::FailoverTimeline {
            title: format!(
                "Failover drill, round {r} ({variant}): unit {} stopped, unit {} took over ({} clients x {} channels, {} changes/s)",
                round.killed, round.new_primary, args.clients, args.channels_per_client, args.rate
            ),
            killed: round.killed,
            new_primary: round.new_primary,
            frozen_us: kill_us,
            stopped_how: stopped_how.to_owned(),
            killed_us: sigkill_us,
            last_primary_rx_us: st.failover.and_then(|f| f.last_primary_rx_unix_us),
            detected_us: started,
            took_over_us: finished,
            channels: channel_events,
            clients: Vec::new(),
            first_submit,
            restarted_us,
            rejoined_us: None,
        };
        timeline_from_logs(lab, np, &mut t);
        round.timeline = Some(t);
    }
    Ok(round)
}

/// The events of a failover that the daemons log (with microsecond stamps) but do not keep
/// in their status, read from their logs in the work directory (lines from `t.frozen_us` on):
/// the new primary's `channel N resolved`, `replay to client C on channel N started` and
/// `finished`, and `standby K joined the sync set` (after the restart: the rejoin); each
/// client's `following epoch E (primary P)`.
fn timeline_from_logs(lab: &Lab, np: usize, t: &mut crate::cli::plot::FailoverTimeline) {
    let lines = |id: u32| -> Vec<(u64, String)> {
        let text = std::fs::read_to_string(lab.dir.join(format!("node-{id}.log")));
        let prefix = format!("node {id}: ");
        text.unwrap_or_default()
            .lines()
            .filter_map(|l| {
                // `<time> <LEVEL> node <id>: <message>` (`--log-format text`).
                let (stamp, rest) = l.split_once(' ')?;
                let at = crate::daemon::parse_unix_us(stamp)?;
                let (_level, rest) = rest.trim_start().split_once(' ')?;
                let msg = rest.strip_prefix(&prefix)?;
                (at >= t.frozen_us).then(|| (at, msg.to_owned()))
            })
            .collect()
    };
    let number = |s: &str| s.parse::<u64>().ok();
    let mut replays: Vec<(u32, u32, u64, Option<u64>)> = Vec::new();
    for (at, msg) in lines(lab.cus[np].id) {
        let words: Vec<&str> = msg.split_whitespace().collect();
        match words.as_slice() {
            ["channel", ch, "resolved:", ..] => {
                if let Some(c) = t
                    .channels
                    .iter_mut()
                    .find(|c| Some(u64::from(c.channel)) == number(ch))
                {
                    c.resolved_us = c.resolved_us.or(Some(at));
                }
            }
            [
                "replay",
                "to",
                "client",
                cl,
                "on",
                "channel",
                ch,
                "started:",
                ..,
            ] => {
                if let (Some(cl), Some(ch)) = (number(cl), number(ch)) {
                    replays.push((cl as u32, ch as u32, at, None));
                }
            }
            [
                "replay",
                "to",
                "client",
                cl,
                "on",
                "channel",
                ch,
                "finished",
            ] => {
                let (cl, ch) = (number(cl).map(|v| v as u32), number(ch).map(|v| v as u32));
                if let Some(r) = replays
                    .iter_mut()
                    .find(|r| Some(r.0) == cl && Some(r.1) == ch && r.3.is_none())
                {
                    r.3 = Some(at);
                }
            }
            ["standby", k, "joined", "the", "sync", "set"]
                if number(k) == Some(u64::from(t.killed))
                    && t.restarted_us.is_some_and(|r| at >= r) =>
            {
                t.rejoined_us = t.rejoined_us.or(Some(at));
            }
            _ => {}
        }
    }
    let follows = format!("(primary {})", t.new_primary);
    for c in &lab.clients {
        let followed_us = lines(c.id)
            .into_iter()
            .find(|(_, m)| m.starts_with("following epoch") && m.ends_with(&follows))
            .map(|(at, _)| at);
        t.clients.push(crate::cli::plot::ClientEvents {
            client: c.id,
            followed_us,
            replays: replays
                .iter()
                .filter(|r| r.0 == c.id)
                .map(|r| (r.1, r.2, r.3))
                .collect(),
        });
    }
}

/// When the new primary first accepted a submit: the first status poll whose
/// `submits_accepted` passed `before`, and the poll before it (or the takeover, `after_us`:
/// nothing is accepted before the failover finished). Polls for at most 300 ms (while the
/// load runs); `None` if no submit was seen by then.
fn first_accepted_submit(lab: &Lab, np: usize, before: u64, after_us: u64) -> Option<(u64, u64)> {
    let start = Instant::now();
    let mut after = after_us;
    while start.elapsed() < Duration::from_millis(300) {
        if let Some(v) = lab.status(&lab.cus[np].admin) {
            let (now, n) = (v.now_unix_us, v.counters.core.submits_accepted);
            if n > before {
                return Some((after, now));
            }
            after = after.max(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// True when unit `i` is a standby in primary `p`'s sync set.
fn in_sync_standby(l: &Lab, p: usize, i: usize) -> bool {
    role(&l.status(&l.cus[i].admin)) == "standby"
        && l.status(&l.cus[p].admin)
            .is_some_and(|v| v.in_sync_set(l.cus[i].id))
}

/// A control unit's `counters.xfer_bytes`. The daemon has no per-peer or receiving-side
/// transfer counter: a primary adds each snapshot stream's payload when it starts it, whatever
/// peer it goes to (a standby counts nothing), so the drill reads the sender's delta.
fn xfer_bytes(lab: &Lab, idx: usize) -> Option<u64> {
    counter(lab, idx, |c| c.core.xfer_bytes)
}

/// One of a control unit's status `counters`.
fn counter(lab: &Lab, idx: usize, pick: impl Fn(&CounterStatus) -> u64) -> Option<u64> {
    lab.status(&lab.cus[idx].admin).map(|v| pick(&v.counters))
}

/// Waits for a unit that was not killed this round to lead an epoch newer than `old_epoch`
/// (whichever the vote picked: the drill does not predict it).
fn wait_new_primary(lab: &Lab, killed: &[usize], old_epoch: u64) -> Result<usize, String> {
    let mut found = None;
    lab.wait_for("a new primary", Duration::from_secs(10), |l| {
        found = (0..l.cus.len()).filter(|i| !killed.contains(i)).find(|&i| {
            let st = l.status(&l.cus[i].admin);
            role(&st) == "primary" && epoch(&st).is_some_and(|e| e > old_epoch)
        });
        found.is_some()
    })?;
    found.ok_or_else(|| "no new primary".to_owned())
}

/// The committed set at the freeze, read from every in-sync standby, keeping per channel the
/// lowest applied position.
///
/// Any one in-sync standby would do for the committed set itself: the primary commits an op
/// only once every member of its sync set has applied it, so each of them holds a superset.
/// But with three or more units one standby may have applied ops that another has not: those
/// were never committed, and if the other one is voted in (or the first successor dies, as in
/// double-fault) they are legitimately cut, and would be miscounted as lost. The minimum over
/// the sync set is still a superset of what was committed, and every member holds all of it.
fn capture_in_sync(lab: &Lab, standbys: &[usize], epoch: u64) -> Result<Vec<Committed>, String> {
    let mut low: Option<Vec<Committed>> = None;
    for &i in standbys {
        let c = capture_commits(lab, &lab.cus[i].admin, "standby", epoch, "applied")?;
        low = Some(match low {
            None => c,
            Some(l) => l
                .into_iter()
                .zip(c)
                .map(|(a, b)| if b.top < a.top { b } else { a })
                .collect(),
        });
    }
    low.ok_or_else(|| "no in-sync standby to take the committed set from".to_owned())
}

fn summarize(
    args: &DrillArgs,
    variant: &str,
    rounds: &[Round],
    dir: &Path,
) -> Result<bool, String> {
    let ok = || rounds.iter().filter(|r| r.error.is_none());
    let mut det: Vec<f64> = ok().map(|r| r.detection_ms).collect();
    let mut rec: Vec<f64> = ok().map(|r| r.recovery_ms).collect();
    det.sort_by(f64::total_cmp);
    rec.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let max = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    let converged = rounds
        .iter()
        .filter(|r| {
            r.error.is_none()
                && r.digests_equal
                && r.standby_digests_equal
                && r.lost_committed == 0
                && r.rejoined
                && r.primary_undisturbed != Some(false)
                && r.primary_hook != Some(false)
        })
        .count();
    let failed = rounds.iter().filter(|r| r.error.is_some()).count();
    let checked: u64 = rounds.iter().map(|r| r.committed_checked).sum();
    let beyond: u64 = rounds.iter().map(|r| r.committed_beyond_history).sum();
    let lossy = rounds.iter().filter(|r| r.lost_committed > 0).count();
    let lost: u64 = rounds.iter().map(|r| r.lost_committed).sum();
    let differ = rounds
        .iter()
        .filter(|r| r.error.is_none() && !(r.digests_equal && r.standby_digests_equal))
        .count();
    say!("\n== drill summary ({variant}) ==");
    say!("rounds converged: {converged} of {}", rounds.len());
    say!("rounds failed before finishing: {failed}");
    say!(
        "committed ops checked: {checked}; committed ops lost: {lost} (in {lossy} rounds); rounds with differing digests: {differ}"
    );
    if beyond > 0 {
        say!(
            "committed ops not checkable: {beyond}, older than the {} epochs of history a channel keeps",
            crate::proto::history::MAX_SEGMENTS
        );
    }
    say!(
        "detection: median {:.1} ms, max {:.1} ms",
        med(&det),
        max(&det)
    );
    say!(
        "recovery:  median {:.1} ms, max {:.1} ms",
        med(&rec),
        max(&rec)
    );
    if let Some(path) = &args.json {
        let j = json!({
            "variant": variant,
            "control_units": args.control_units,
            "netns": args.netns,
            "rounds": rounds.len(),
            "converged": converged,
            "lost_committed": lost,
            "rounds_losing_committed": lossy,
            "committed_checked": checked,
            "committed_beyond_history": beyond,
            "failed": failed,
            "digests_differ": differ,
            "inject_bug": args.inject_bug.name(),
            "detection_ms": {"median": med(&det), "max": max(&det)},
            "recovery_ms": {"median": med(&rec), "max": max(&rec)},
            "per_round": rounds.iter().map(|r| json!({
                "round": r.round, "control_units": r.control_units, "killed": r.killed,
                "successor_killed": r.successor_killed, "successor_killed_as": r.successor_killed_as,
                "new_primary": r.new_primary,
                "detection_ms": r.detection_ms, "recovery_ms": r.recovery_ms,
                "out_of_sync_channels": r.out_of_sync_channels, "out_of_sync_clients": r.out_of_sync_clients,
                "replayed_bytes": r.replayed_bytes, "full_resync_bytes": r.full_resync_bytes,
                "standby_transfer_bytes": r.standby_transfer_bytes,
                "committed_checked": r.committed_checked, "lost_committed": r.lost_committed,
                "committed_beyond_history": r.committed_beyond_history,
                "digests_equal": r.digests_equal, "rejoined": r.rejoined,
                "standby_digests_equal": r.standby_digests_equal, "stale_fenced": r.stale_fenced,
                "primary_undisturbed": r.primary_undisturbed,
                "primary_hook": r.primary_hook, "hook_transitions": r.hook_transitions,
                "dry_run": r.dry_run,
                "error": r.error,
            })).collect::<Vec<_>>(),
        });
        crate::cli::write_json(path, &j)?;
    }
    if args.netns {
        let _ = lab_script(dir, "lab-down.sh").map(|down| {
            Command::new("bash")
                .arg(&down)
                .stdout(Stdio::null())
                .status()
        });
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(converged == rounds.len())
}

#[cfg(test)]
mod tests {
    use super::Variant;
    use clap::ValueEnum;

    /// The names reports use are the ones the command line takes.
    #[test]
    fn variant_names_are_the_command_line_names() {
        for v in Variant::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.name());
        }
    }
}
