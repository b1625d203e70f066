//! Unused loopback addresses for test servers.
//!
//! Each server gets its own 127.0.0.x (x in 2..=250, never .1 so that a
//! developer's or a packaged etcd on 127.0.0.1:2379 is never hit) and ports
//! the kernel reported free. Spreading over many IPs makes a collision between
//! parallel test processes need the same IP *and* the same ephemeral port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest and highest last octet handed out.
const LOOPBACK_OCTET_MIN: u32 = 2;
const LOOPBACK_OCTET_MAX: u32 = 250;

/// Per-process counter, so consecutive calls in one test get different IPs.
static ADDR_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A loopback IP 127.0.0.x, chosen from the process id and a counter: tests
/// run by nextest are separate processes with distinct pids.
pub fn loopback_ip() -> Ipv4Addr {
    let seq = ADDR_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let span = LOOPBACK_OCTET_MAX - LOOPBACK_OCTET_MIN + 1;
    let mix = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(seq.wrapping_mul(37));
    let octet = LOOPBACK_OCTET_MIN + mix % span;
    Ipv4Addr::new(127, 0, 0, octet as u8)
}

/// One unused address on a fresh loopback IP.
pub fn free_addr() -> SocketAddr {
    free_ports(loopback_ip(), 1)[0]
}

/// Two unused ports on the same loopback IP (client and peer of one member).
pub fn free_addr_pair() -> (SocketAddr, SocketAddr) {
    let addrs = free_ports(loopback_ip(), 2);
    (addrs[0], addrs[1])
}

/// `count` distinct free ports on `ip`. All listeners are held until every
/// port is chosen, so the kernel cannot hand out the same port twice.
pub fn free_ports(ip: Ipv4Addr, count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind((ip, 0))
                .unwrap_or_else(|e| panic!("cannot bind {ip}:0 to find a free port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr of a bound listener"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ips_stay_in_range_and_vary() {
        let ips: Vec<Ipv4Addr> = (0..300).map(|_| loopback_ip()).collect();
        for ip in &ips {
            let o = ip.octets();
            assert_eq!(&o[..3], &[127, 0, 0]);
            assert!((2..=250).contains(&o[3]), "{ip}");
        }
        assert!(ips[0] != ips[1]);
    }

    #[test]
    fn pair_is_two_ports_on_one_ip() {
        let (a, b) = free_addr_pair();
        assert_eq!(a.ip(), b.ip());
        assert_ne!(a.port(), b.port());
    }
}
