//! A TCP proxy between a device and the server that injects the faults of a mountain link.
//! Two kinds of fault, freely combined:
//!
//! - counted in bytes (deterministic, for tests): cut the connection each time a number of
//!   bytes has gone up, flip a bit at chosen offsets, cut an answer short, slow uploads;
//! - in real time (for the weak-link benchmark): a rate shared by both directions, a round-trip
//!   time, cuts of every open connection at each multiple of an interval, a stall of the open
//!   connections without closing them, a freeze of the whole link.
//!
//! Each direction of a connection is a reader thread, which applies the byte faults, and a
//! writer thread, which delivers bytes when the link's timeline says they arrive. With a rate,
//! the readers queue their bytes per direction of each connection (a flow) and one scheduler
//! sends them a piece at a time, taking turns between the flows that have something to send,
//! as a radio's scheduler does: the capacity is shared, but a small answer coming down does
//! not wait behind everything a phone queued going up. A cut closes both sockets and drops
//! what was queued or sent but not delivered.

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
    /// Bytes a rated link sent, both ways: what it spent its time on (the bytes read from
    /// either side, `up_bytes` and `down_bytes`, include what a cut dropped before sending).
    pub sent_bytes: u64,
    /// Of which server to device.
    pub sent_down_bytes: u64,
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
    /// Bytes waiting for a rated link, per direction of each connection.
    flows: Vec<Flow>,
    /// The flow whose turn is next.
    turn: usize,
}

/// One direction of one connection on a rated link: what its reader queued, and its writer.
#[derive(Debug)]
struct Flow {
    conn: Arc<Conn>,
    dir: Direction,
    waiting: std::collections::VecDeque<Queued>,
    out: mpsc::Sender<Piece>,
}

#[derive(Debug)]
enum Queued {
    Bytes(Vec<u8>),
    /// Deliver what came before, then cut the connection.
    CutAfter,
    /// The reader has ended: the writer ends after what came before.
    Closed,
}

impl Link {
    /// When bytes of `conn` read at `now` arrive on a link without a rate.
    fn book(&self, conn: &Conn, now: Instant) -> Instant {
        self.unfrozen(now.max(conn.ready_at)) + self.faults.rtt / 2
    }

    /// `at`, or the end of the freeze it falls in.
    fn unfrozen(&self, at: Instant) -> Instant {
        match self.faults.freeze {
            Some((from, length)) => {
                let (from, to) = (self.started + from, self.started + from + length);
                if at >= from && at < to { to } else { at }
            }
            None => at,
        }
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
#[derive(Debug)]
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
            flows: Vec::new(),
            turn: 0,
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
        let scheduler = {
            let (link, stop) = (link.clone(), stop.clone());
            std::thread::spawn(move || schedule(&link, &stop))
        };
        Ok(Self {
            url: format!("http://{addr}"),
            link,
            stop,
            addr,
            threads: vec![accept, cutter, scheduler],
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

/// Queues a reader's piece on its flow (made at its first piece).
fn queue(
    l: &mut Link,
    (conn, dir): (&Arc<Conn>, Direction),
    out: &mpsc::Sender<Piece>,
    piece: Queued,
) {
    let flow = l
        .flows
        .iter_mut()
        .find(|f| Arc::ptr_eq(&f.conn, conn) && f.dir == dir);
    match flow {
        Some(f) => f.waiting.push_back(piece),
        // A connection that ended before sending anything has nothing to deliver.
        None if matches!(piece, Queued::Closed) => {}
        None => l.flows.push(Flow {
            conn: conn.clone(),
            dir,
            waiting: [piece].into(),
            out: out.clone(),
        }),
    }
}

/// Sends the flows' bytes at the link's rate, a piece at a time, each flow in turn.
fn schedule(link: &Mutex<Link>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let wait = {
            let mut l = link.lock();
            let now = Instant::now();
            let free = l.unfrozen(l.free_at.max(now));
            if free > now {
                free - now
            } else {
                send_next(&mut l, now)
            }
        };
        std::thread::sleep(wait.min(Duration::from_millis(5)));
    }
}

/// Sends the next flow's turn: up to a [`PIECE`] of its bytes (its small pieces together, so
/// turns are fair in bytes, not in pieces); returns how long until the link is free again.
fn send_next(l: &mut Link, now: Instant) -> Duration {
    // What was queued on a cut connection is lost with it.
    l.flows.retain(|f| !f.conn.is_cut());
    let n = l.flows.len();
    let ready = (0..n)
        .map(|i| (l.turn + i) % n)
        .find(|&i| l.flows[i].conn.ready_at <= now && !l.flows[i].waiting.is_empty());
    let Some(i) = ready else {
        return Duration::from_millis(1);
    };
    l.turn = i + 1;
    let (mut bytes, mut then) = (Vec::new(), None);
    while let Some(piece) = l.flows[i].waiting.pop_front() {
        match piece {
            Queued::Bytes(mut b) => {
                bytes.append(&mut b);
                let next_fits = matches!(l.flows[i].waiting.front(),
                    Some(Queued::Bytes(b)) if bytes.len() + b.len() <= PIECE);
                if !next_fits {
                    break;
                }
            }
            other => {
                then = Some(other);
                break;
            }
        }
    }
    if !bytes.is_empty() {
        let rate = l.faults.rate.unwrap_or(u64::MAX).max(1);
        l.free_at = now + Duration::from_secs_f64(bytes.len() as f64 / rate as f64);
        let arrives = l.free_at + l.faults.rtt / 2;
        l.stats.sent_bytes += bytes.len() as u64;
        if l.flows[i].dir == Direction::Down {
            l.stats.sent_down_bytes += bytes.len() as u64;
        }
        if l.flows[i].out.send(Piece::Bytes(arrives, bytes)).is_err() {
            l.flows.remove(i);
            return Duration::ZERO;
        }
    }
    match then {
        Some(Queued::CutAfter) => {
            let _ = l.flows[i].out.send(Piece::CutAfter);
            l.flows.remove(i);
        }
        // Dropping the flow drops its sender: the writer ends after what it holds.
        Some(Queued::Closed) => {
            l.flows.remove(i);
        }
        _ => {}
    }
    l.free_at.saturating_duration_since(now)
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
    conn: &Arc<Conn>,
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
            let arrives = if l.faults.rate.is_some() {
                // The scheduler sends it when the flow's turn comes.
                queue(
                    &mut l,
                    (conn, dir),
                    out,
                    Queued::Bytes(buf[..pass].to_vec()),
                );
                if cut_after {
                    queue(&mut l, (conn, dir), out, Queued::CutAfter);
                }
                None
            } else {
                Some(l.book(conn, Instant::now()))
            };
            (pass, cut_after, pause, arrives)
        };
        if let Some(arrives) = arrives {
            if out
                .send(Piece::Bytes(arrives, buf[..pass].to_vec()))
                .is_err()
            {
                break;
            }
            if cut_after {
                let _ = out.send(Piece::CutAfter);
            }
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if cut_after {
            break;
        }
    }
    queue(&mut link.lock(), (conn, dir), out, Queued::Closed);
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
