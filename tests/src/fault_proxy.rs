//! A TCP proxy between a device and the server that injects the faults of a mountain link:
//! it cuts the connection each time a number of bytes has gone up, slows the link to a rate,
//! flips a bit at chosen offsets, and cuts an answer short. It counts what passed, so tests
//! can hold the sync to its byte budget.

#![allow(clippy::indexing_slicing)] // offsets within a fixed buffer, checked by the reads

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

/// What the link does to the traffic. Offsets count client→server bytes over the proxy's life.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Cut the connection in flight each time this many more bytes have gone up.
    pub cut_every: Option<u64>,
    /// Upload rate (bytes per second).
    pub up_bytes_per_second: Option<u64>,
    /// Flip one bit of the byte at each of these upward offsets.
    pub corrupt_at: Vec<u64>,
    /// Once this many bytes have gone up, the next answer is cut after a few bytes.
    pub truncate_answer_after: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub cuts: u64,
    pub corrupted: u64,
    pub truncated_answers: u64,
    pub connections: u64,
}

#[derive(Default)]
struct Link {
    faults: Faults,
    stats: LinkStats,
    /// Up bytes since the last cut.
    since_cut: u64,
    truncate_armed: bool,
}

pub struct FaultProxy {
    pub url: String,
    link: Arc<Mutex<Link>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

/// Bytes moved per read: small, so cuts and rates are precise.
const PIECE: usize = 2048;

impl FaultProxy {
    /// Listens on a loopback port and forwards to `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: SocketAddr, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let link = Arc::new(Mutex::new(Link {
            faults,
            ..Link::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (link, stop) = (link.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    link.lock().stats.connections += 1;
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let ends = [
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ];
                    let ends = Arc::new(ends);
                    {
                        let (link, ends) = (link.clone(), ends.clone());
                        let (from, to) = (
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        );
                        std::thread::spawn(move || pump_up(from, to, &link, &ends));
                    }
                    let link = link.clone();
                    std::thread::spawn(move || pump_down(server, client, &link, &ends));
                }
            })
        };
        Self {
            url: format!("http://{addr}"),
            link,
            stop,
            addr,
            accept: Some(accept),
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.link.lock().stats
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut link = self.link.lock();
        link.faults = faults;
        link.since_cut = 0;
        link.truncate_armed = false;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn cut(ends: &[TcpStream; 2]) {
    for end in ends {
        let _ = end.shutdown(Shutdown::Both);
    }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream, link: &Mutex<Link>, ends: &[TcpStream; 2]) {
    let mut buf = [0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (pass, cut_now, pause) = {
            let mut l = link.lock();
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
            let pause = l
                .faults
                .up_bytes_per_second
                .map(|rate| Duration::from_secs_f64(pass as f64 / rate.max(1) as f64));
            (pass, cut_now, pause)
        };
        if to.write_all(&buf[..pass]).is_err() {
            break;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if cut_now {
            cut(ends);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_down(mut from: TcpStream, mut to: TcpStream, link: &Mutex<Link>, ends: &[TcpStream; 2]) {
    let mut buf = [0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let truncate = {
            let mut l = link.lock();
            let armed = std::mem::take(&mut l.truncate_armed);
            if armed {
                l.stats.truncated_answers += 1;
            }
            l.stats.down_bytes += n as u64;
            armed
        };
        let pass = if truncate { n.min(12) } else { n };
        if to.write_all(&buf[..pass]).is_err() {
            break;
        }
        if truncate {
            cut(ends);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
