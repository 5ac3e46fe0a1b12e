//! A private `tgtd` (Linux SCSI target daemon) for one test: its own iSCSI
//! port on 127.0.0.1 and its own control port, so tests running in parallel
//! never see each other's targets.
//!
//! ```ignore
//! let t = Tgtd::start("mytest");
//! t.add_target(1, "iqn.2026-11.test:disks");
//! t.add_lun(1, 3, &file, &[("scsi_id", "disk3"), ("scsi_sn", "SN3")]);
//! t.bind_all(1);
//! let url = t.url("iqn.2026-11.test:disks", 3);
//! ```
//!
//! tgtd ignores SIGTERM while it has targets, so [`Drop`] asks it to shut
//! down (`tgtadm --op delete --mode system`) and SIGKILLs it if it is still
//! there after a few seconds. [`Tgtd::kill`] SIGKILLs it on purpose (a
//! target lost mid-read); [`Tgtd::restart`] starts a fresh daemon on the
//! same iSCSI port, with the same targets, LUNs and accounts.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One thing done to the daemon, replayed by [`Tgtd::restart`].
#[derive(Clone, Debug)]
enum Setup {
    Target { tid: u32, iqn: String },
    Lun { tid: u32, lun: u64, file: PathBuf, params: Vec<(String, String)> },
    BindAll { tid: u32 },
    Account { tid: u32, user: String, secret: String, outgoing: bool },
}

pub struct Tgtd {
    child: Option<Child>,
    /// The iSCSI port on 127.0.0.1.
    pub port: u16,
    /// tgtd's management channel number (`-C N`; tgtd accepts up to 32767).
    control: u16,
    log: PathBuf,
    setup: Vec<Setup>,
}

impl Tgtd {
    /// Starts a daemon on a free port. `name` names its log file under the
    /// scratch directory (`tgtd-NAME.log`).
    pub fn start(name: &str) -> Tgtd {
        let port = free_port();
        let log = crate::scratch(&format!("tgtd-{name}-{}", std::process::id())).join("tgtd.log");
        let mut t = Tgtd { child: None, port, control: control_for(port), log, setup: Vec::new() };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("tgtd log file");
        let child = Command::new("tgtd")
            .args(["-f", "--iscsi", &format!("portal=127.0.0.1:{}", self.port), "-C", &self.control.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start tgtd (apt-get install tgt)");
        self.child = Some(child);
        // Ready when the management channel answers and the portal accepts.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("tgtd exited at start ({status}); log {}:\n{}", self.log.display(), self.log_text());
            }
            let mgmt = Command::new("tgtadm")
                .args(["-C", &self.control.to_string(), "--lld", "iscsi", "--op", "show", "--mode", "target"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if mgmt && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("tgtd on port {} not ready after 10 s; log:\n{}", self.port, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn portal(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`.
    pub fn url(&self, iqn: &str, lun: u64) -> String {
        format!("iscsi://127.0.0.1:{}/{iqn}/{lun}", self.port)
    }

    /// The daemon's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `tgtadm -C N --lld iscsi ARGS`, panicking on failure; returns stdout.
    pub fn tgtadm(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("tgtadm");
        cmd.args(["-C", &self.control.to_string(), "--lld", "iscsi"]).args(args);
        crate::run_text(&mut cmd)
    }

    fn apply(&self, s: &Setup) {
        match s {
            Setup::Target { tid, iqn } => {
                self.tgtadm(&["--op", "new", "--mode", "target", "--tid", &tid.to_string(), "-T", iqn]);
            }
            Setup::Lun { tid, lun, file, params } => {
                let (tid, lun) = (tid.to_string(), lun.to_string());
                let file = file.to_str().expect("utf-8 backing file path");
                self.tgtadm(&["--op", "new", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "-b", file]);
                if !params.is_empty() {
                    let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    self.tgtadm(&["--op", "update", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "--params", &p.join(",")]);
                }
            }
            Setup::BindAll { tid } => {
                self.tgtadm(&["--op", "bind", "--mode", "target", "--tid", &tid.to_string(), "-I", "ALL"]);
            }
            Setup::Account { tid, user, secret, outgoing } => {
                // Accounts are global to the daemon; a second bind reuses one.
                let exists = self.tgtadm(&["--op", "show", "--mode", "account"]).lines().any(|l| l.trim() == user);
                if !exists {
                    self.tgtadm(&["--op", "new", "--mode", "account", "--user", user, "--password", secret]);
                }
                let tid = tid.to_string();
                let mut a = vec!["--op", "bind", "--mode", "account", "--tid", &tid, "--user", user];
                if *outgoing {
                    a.push("--outgoing");
                }
                self.tgtadm(&a);
            }
        }
    }

    fn record(&mut self, s: Setup) {
        self.apply(&s);
        self.setup.push(s);
    }

    /// A new target `tid` (non-zero) named `iqn`.
    pub fn add_target(&mut self, tid: u32, iqn: &str) {
        self.record(Setup::Target { tid, iqn: iqn.into() });
    }

    /// LUN `lun` of target `tid` backed by `file`, then `--params` such as
    /// `scsi_id`, `scsi_sn`, `vendor_id`, `product_id`, `product_rev`,
    /// `readonly` (tgtd's own read-only flag: leave it off when a test must
    /// prove that the initiator itself never writes).
    pub fn add_lun(&mut self, tid: u32, lun: u64, file: &Path, params: &[(&str, &str)]) {
        let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.record(Setup::Lun { tid, lun, file: file.to_owned(), params });
    }

    /// Lets every initiator address log in to target `tid`.
    pub fn bind_all(&mut self, tid: u32) {
        self.record(Setup::BindAll { tid });
    }

    /// Requires CHAP: the initiator must log in to `tid` as `user`/`secret`.
    pub fn add_chap(&mut self, tid: u32, user: &str, secret: &str) {
        self.record(Setup::Account { tid, user: user.into(), secret: secret.into(), outgoing: false });
    }

    /// The target's own CHAP identity for mutual CHAP.
    pub fn add_chap_outgoing(&mut self, tid: u32, user: &str, secret: &str) {
        self.record(Setup::Account { tid, user: user.into(), secret: secret.into(), outgoing: true });
    }

    /// SIGKILLs the daemon now (a target lost without notice).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh daemon on the same port and replays every target, LUN,
    /// binding and account. Call after [`Tgtd::kill`].
    pub fn restart(&mut self) {
        self.kill();
        // The kernel may hold the port briefly; tgtd sets SO_REUSEADDR, but
        // retry a bind failure anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
        for s in self.setup.clone() {
            self.apply(&s);
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // `delete --mode system` is refused while targets exist: remove them
        // (forcibly, sessions included) first, then ask tgtd to exit.
        let control = self.control.to_string();
        let quiet = |args: &[&str]| {
            let _ = Command::new("tgtadm").args(["-C", &control, "--lld", "iscsi"]).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        for s in &self.setup {
            if let Setup::Target { tid, .. } = s {
                quiet(&["--op", "delete", "--force", "--mode", "target", "--tid", &tid.to_string()]);
            }
        }
        quiet(&["--op", "delete", "--mode", "system"]);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on now. Ports handed out by this process are never
/// handed out twice, so two tests of one binary cannot race for one.
fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if !given.contains(&port) && !given.contains(&control_port_twin(port, &given)) {
            given.push(port);
            return port;
        }
    }
}

/// A port whose control channel number collides with `port`'s, if any was given.
fn control_port_twin(port: u16, given: &[u16]) -> u16 {
    given.iter().copied().find(|&g| control_for(g) == control_for(port)).unwrap_or(0)
}

/// tgtd's `-C` accepts 0..32767; derive it from the iSCSI port so daemons of
/// different test processes (different ports) get different channels.
fn control_for(port: u16) -> u16 {
    1000 + port % 31_000
}
