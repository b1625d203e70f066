//! TCP proxies that put a misbehaving network between a client and a real
//! server: one that holds every client chunk for a while (a slow server),
//! one that cuts a connection the moment its first gRPC request arrives (a
//! request lost in flight, after the client sent it).
//!
//! A [`Proxy`] stops accepting and closes every connection it made when
//! dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does to client-to-server bytes.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Each chunk is forwarded `0` after it arrived.
    Delay(Duration),
    /// The first `0` requests (HTTP/2 HEADERS frames from the client) are
    /// never forwarded: their connection is closed both ways when one
    /// arrives. Later requests pass untouched.
    CutFirstRequests(usize),
}

pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    cuts: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (stop2, conns2, cuts2) = (stop.clone(), conns.clone(), cuts.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut all) = conns2.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                let cut = match fault {
                    Fault::CutFirstRequests(k) => Some((cuts2.clone(), k)),
                    Fault::Delay(_) => None,
                };
                let delay = match fault {
                    Fault::Delay(d) => d,
                    Fault::CutFirstRequests(_) => Duration::ZERO,
                };
                thread::spawn(move || forward_client(c2, s2, delay, cut));
                thread::spawn(move || copy(server, client));
            }
        });
        Proxy {
            addr,
            stop,
            conns,
            cuts,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Ok(all) = self.conns.lock() {
            for s in all.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;

fn forward_client(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    cut: Option<(Arc<AtomicUsize>, usize)>,
) {
    let Some((cuts, max_cuts)) = cut else {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            thread::sleep(delay);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        return;
    };
    // Whole frames are forwarded as they complete, so the server sees the
    // preface and settings but never the request.
    let mut pending = Vec::new();
    let mut preface_done = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            if !preface_done {
                if pending.len() < PREFACE_LEN {
                    break;
                }
                if to.write_all(&pending[..PREFACE_LEN]).is_err() {
                    return;
                }
                pending.drain(..PREFACE_LEN);
                preface_done = true;
                continue;
            }
            if pending.len() < FRAME_HEADER_LEN {
                break;
            }
            let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            let kind = pending[3];
            let stream =
                u32::from_be_bytes([pending[5], pending[6], pending[7], pending[8]]) & 0x7fff_ffff;
            let cut_this = kind == FRAME_HEADERS
                && stream != 0
                && cuts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                        (c < max_cuts).then_some(c + 1)
                    })
                    .is_ok();
            if cut_this {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if pending.len() < FRAME_HEADER_LEN + len {
                break;
            }
            if to.write_all(&pending[..FRAME_HEADER_LEN + len]).is_err() {
                return;
            }
            pending.drain(..FRAME_HEADER_LEN + len);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
