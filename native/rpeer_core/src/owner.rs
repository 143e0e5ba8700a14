//! Who is at the other end of an accepted loopback connection (Linux, through /proc).
//!
//! A tcp peer's channel must come from the peer rpeer spawned: the connecting socket is
//! found in /proc/net/tcp{,6} (its local address is the accepted connection's remote
//! address and the other way round), and the connection is the peer's when a process
//! of the spawned program's process group holds that socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether a process in process group `pgid` holds the client end of the connection
/// whose accepted end has local address `local` and remote address `remote`.
pub fn connection_from_group(local: SocketAddr, remote: SocketAddr, pgid: u32) -> bool {
    let Some(inode) = client_socket_inode(local, remote) else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    crate::spawn::group_members(pgid)
        .into_iter()
        .any(|pid| holds(pid, &target))
}

/// The inode of the socket whose local address is `remote` and remote address `local`.
fn client_socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (its_local, its_remote) = (
                    parse_address(fields.get(1)?)?,
                    parse_address(fields.get(2)?)?,
                );
                if same(its_local, remote) && same(its_remote, local) {
                    fields.get(9)?.parse().ok()
                } else {
                    None
                }
            })
        })
}

/// Addresses compare equal across IPv4 and IPv4-mapped IPv6.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Parses /proc/net/tcp's `HEXADDR:HEXPORT` (the address in host byte order words).
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(address, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut octets = [0u8; 16];
            for (i, word) in octets.chunks_exact_mut(4).enumerate() {
                let value = u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok()?;
                word.copy_from_slice(&value.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn holds(pid: u32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn parses_proc_net_addresses() {
        assert_eq!(
            parse_address("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_address("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().expect("addr"))
        );
        assert_eq!(parse_address("nonsense"), None);
    }

    #[test]
    fn connection_of_this_process_is_found_in_its_group() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, remote) = listener.accept().expect("accept");
        let local = accepted.local_addr().expect("local");
        // SAFETY: getpgrp() only returns this process's group id.
        let own_group = unsafe { libc::getpgrp() } as u32;
        assert!(connection_from_group(local, remote, own_group));
        assert!(!connection_from_group(local, remote, u32::MAX - 1));
    }
}
