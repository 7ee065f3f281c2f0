//! A TCP proxy between a device and the server that injects the faults of a mountain link.
//! Two kinds of fault, freely combined:
//!
//! - counted in bytes (deterministic, for tests): cut the connection each time a number of
//!   bytes has gone up, flip a bit at chosen offsets, cut an answer short, slow uploads;
//! - in real time (for the weak-link benchmark): a rate shared by both directions, a round-trip
//!   time, cuts of every open connection at each multiple of an interval, a stall of the open
//!   connections without closing them, a freeze of the whole link.
//!
//! Each direction of a connection is a reader thread, which applies the byte faults and books
//! the bytes on the link's timeline, and a writer thread, which delivers them when the timeline
//! says they arrive. A cut closes both sockets and drops what was booked but not delivered.

#![allow(clippy::indexing_slicing)] // offsets within a fixed buffer, checked by the reads

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What the link does to the traffic. Byte offsets count client→server bytes over the proxy's
/// life; times count from the proxy's start.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Cut the connection in flight each time this many more bytes have gone up.
    pub cut_every: Option<u64>,
    /// Upload rate (bytes per second), for uploads only, paced by the reader.
    pub up_bytes_per_second: Option<u64>,
    /// Flip one bit of the byte at each of these upward offsets.
    pub corrupt_at: Vec<u64>,
    /// Once this many bytes have gone up, the next answer is cut after a few bytes.
    pub truncate_answer_after: Option<u64>,
    /// The link's rate in bytes per second, shared by both directions and all connections.
    pub rate: Option<u64>,
    /// Round-trip time: a byte arrives half of it after the link sent it, and a new connection
    /// waits one round trip (the TCP handshake) before its first byte goes.
    pub rtt: Duration,
    /// Every open connection is cut at each multiple of this interval.
    pub cut_interval: Option<Duration>,
    /// The whole link, new connections included, moves nothing from `.0` for `.1`.
    pub freeze: Option<(Duration, Duration)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub cuts: u64,
    pub corrupted: u64,
    pub truncated_answers: u64,
    pub connections: u64,
    /// Connections stalled by [`FaultProxy::stall_open_connections`].
    pub stalled: u64,
}

/// One proxied connection: its two sockets and what the link did to it.
#[derive(Debug)]
struct Conn {
    ends: [TcpStream; 2],
    /// When the handshake is over and its first byte may go.
    ready_at: Instant,
    cut: AtomicBool,
    stalled: AtomicBool,
}

impl Conn {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for end in &self.ends {
            let _ = end.shutdown(Shutdown::Both);
        }
    }
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Link {
    faults: Faults,
    stats: LinkStats,
    started: Instant,
    /// Up bytes since the last byte-counted cut.
    since_cut: u64,
    truncate_armed: bool,
    /// When the link has sent everything booked so far.
    free_at: Instant,
    open: Vec<Arc<Conn>>,
}

impl Link {
    /// Books `n` bytes of `conn` read at `now` on the link; returns when they arrive.
    fn book(&mut self, conn: &Conn, n: usize, now: Instant) -> Instant {
        let mut begin = now.max(self.free_at).max(conn.ready_at);
        if let Some((from, length)) = self.faults.freeze {
            let (from, to) = (self.started + from, self.started + from + length);
            if begin >= from && begin < to {
                begin = to;
            }
        }
        let sending = self.faults.rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(n as f64 / r.max(1) as f64)
        });
        self.free_at = begin + sending;
        self.free_at + self.faults.rtt / 2
    }
}

pub struct FaultProxy {
    pub url: String,
    link: Arc<Mutex<Link>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Bytes moved per read: small, so cuts and rates are precise.
const PIECE: usize = 1024;

/// What a reader hands its writer.
enum Piece {
    Bytes(Instant, Vec<u8>),
    /// Deliver what came before, then cut the connection.
    CutAfter,
}

impl FaultProxy {
    /// Listens on a loopback port and forwards to `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: SocketAddr, faults: Faults) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let link = Arc::new(Mutex::new(Link {
            faults,
            stats: LinkStats::default(),
            started: now,
            since_cut: 0,
            truncate_armed: false,
            free_at: now,
            open: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (link, stop) = (link.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(&listener, upstream, &link, &stop))
        };
        let cutter = {
            let (link, stop) = (link.clone(), stop.clone());
            std::thread::spawn(move || cut_on_schedule(&link, &stop))
        };
        Ok(Self {
            url: format!("http://{addr}"),
            link,
            stop,
            addr,
            threads: vec![accept, cutter],
        })
    }

    pub fn stats(&self) -> LinkStats {
        self.link.lock().stats
    }

    /// Changes the faults from now on (times still count from the proxy's start).
    pub fn set_faults(&self, faults: Faults) {
        let mut link = self.link.lock();
        link.faults = faults;
        link.since_cut = 0;
        link.truncate_armed = false;
    }

    /// Time since the proxy started: the origin of the faults' times.
    pub fn elapsed(&self) -> Duration {
        self.link.lock().started.elapsed()
    }

    /// The connections open now stop moving bytes and are never closed by the link (a radio
    /// that hangs); connections opened afterwards work. Returns how many were stalled.
    pub fn stall_open_connections(&self) -> u64 {
        let mut link = self.link.lock();
        link.open.retain(|c| !c.is_cut());
        let mut n = 0;
        for c in &link.open {
            if !c.stalled.swap(true, Ordering::SeqCst) {
                n += 1;
            }
        }
        link.stats.stalled += n;
        n
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for c in self.link.lock().open.drain(..) {
            c.cut();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    link: &Arc<Mutex<Link>>,
    stop: &Arc<AtomicBool>,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let conn = {
            let mut l = link.lock();
            l.stats.connections += 1;
            let conn = Arc::new(Conn {
                ends: [client, server],
                ready_at: Instant::now() + l.faults.rtt,
                cut: AtomicBool::new(false),
                stalled: AtomicBool::new(false),
            });
            l.open.retain(|c| !c.is_cut());
            l.open.push(conn.clone());
            conn
        };
        let (s3, c3) = match (s2.try_clone(), c2.try_clone()) {
            (Ok(s3), Ok(c3)) => (s3, c3),
            _ => continue,
        };
        start_direction(c2, s2, Direction::Up, link, &conn, stop);
        start_direction(s3, c3, Direction::Down, link, &conn, stop);
    }
}

/// Cuts every open connection at each multiple of the cut interval.
fn cut_on_schedule(link: &Mutex<Link>, stop: &AtomicBool) {
    let mut cuts_done = 0u64;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
        let mut l = link.lock();
        let Some(every) = l.faults.cut_interval.filter(|d| !d.is_zero()) else {
            continue;
        };
        let due = (l.started.elapsed().as_secs_f64() / every.as_secs_f64()) as u64;
        if due <= cuts_done {
            continue;
        }
        cuts_done = due;
        let open = std::mem::take(&mut l.open);
        for c in open.iter().filter(|c| !c.is_cut()) {
            c.cut();
            l.stats.cuts += 1;
        }
        // What was booked and not sent is lost with the connections: the link is free.
        l.free_at = l.free_at.min(Instant::now());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

fn start_direction(
    from: TcpStream,
    to: TcpStream,
    dir: Direction,
    link: &Arc<Mutex<Link>>,
    conn: &Arc<Conn>,
    stop: &Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::channel();
    {
        let (link, conn) = (link.clone(), conn.clone());
        std::thread::spawn(move || read_side(from, dir, &link, &conn, &tx));
    }
    let (conn, stop) = (conn.clone(), stop.clone());
    std::thread::spawn(move || write_side(to, &conn, &rx, &stop));
}

fn read_side(
    mut from: TcpStream,
    dir: Direction,
    link: &Mutex<Link>,
    conn: &Conn,
    out: &mpsc::Sender<Piece>,
) {
    let mut buf = [0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.is_cut() {
            break;
        }
        let (pass, cut_after, pause, arrives) = {
            let mut l = link.lock();
            let (pass, cut_after) = match dir {
                Direction::Up => up_faults(&mut l, &mut buf, n),
                Direction::Down => down_faults(&mut l, n),
            };
            let pause = match dir {
                Direction::Up => l
                    .faults
                    .up_bytes_per_second
                    .map(|rate| Duration::from_secs_f64(pass as f64 / rate.max(1) as f64)),
                Direction::Down => None,
            };
            let arrives = l.book(conn, pass, Instant::now());
            (pass, cut_after, pause, arrives)
        };
        if out
            .send(Piece::Bytes(arrives, buf[..pass].to_vec()))
            .is_err()
        {
            break;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if cut_after {
            let _ = out.send(Piece::CutAfter);
            break;
        }
    }
    // A stalled connection the device gave up on: free its threads (its bytes never arrive).
    if conn.stalled.load(Ordering::SeqCst) {
        conn.cut();
    }
}

/// The byte-counted faults of an upward piece: how much of it passes, and whether the
/// connection is cut after it.
fn up_faults(l: &mut Link, buf: &mut [u8], n: usize) -> (usize, bool) {
    let start = l.stats.up_bytes;
    let mut pass = n;
    let mut cut_now = false;
    if let Some(every) = l.faults.cut_every {
        let room = every.saturating_sub(l.since_cut);
        if (n as u64) >= room {
            pass = room as usize;
            cut_now = true;
        }
    }
    for at in l.faults.corrupt_at.clone() {
        if at >= start && at < start + pass as u64 {
            buf[(at - start) as usize] ^= 0x10;
            l.stats.corrupted += 1;
        }
    }
    l.stats.up_bytes += pass as u64;
    l.since_cut += pass as u64;
    if cut_now {
        l.since_cut = 0;
        l.stats.cuts += 1;
    }
    if l.faults
        .truncate_answer_after
        .is_some_and(|t| l.stats.up_bytes >= t)
    {
        l.faults.truncate_answer_after = None;
        l.truncate_armed = true;
    }
    (pass, cut_now)
}

fn down_faults(l: &mut Link, n: usize) -> (usize, bool) {
    let truncate = std::mem::take(&mut l.truncate_armed);
    if truncate {
        l.stats.truncated_answers += 1;
    }
    let pass = if truncate { n.min(12) } else { n };
    l.stats.down_bytes += pass as u64;
    (pass, truncate)
}

fn write_side(mut to: TcpStream, conn: &Conn, pieces: &mpsc::Receiver<Piece>, stop: &AtomicBool) {
    for piece in pieces {
        match piece {
            Piece::Bytes(arrives, bytes) => {
                let wait = arrives.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                // A stalled connection holds its bytes and stays open until someone closes it.
                while conn.stalled.load(Ordering::SeqCst) && !conn.is_cut() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if conn.is_cut() || to.write_all(&bytes).is_err() {
                    return;
                }
            }
            Piece::CutAfter => {
                conn.cut();
                return;
            }
        }
    }
    if !conn.stalled.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
