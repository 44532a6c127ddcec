//! A classic pcap file (LINKTYPE_RAW: each packet an IPv4 or IPv6
//! header, then UDP or TCP, then the payload), written from what the
//! stack sent and received: the IP and transport headers are made up
//! around the payload with its true addresses and ports. A stream
//! connection keeps a sequence number per direction, so a reader
//! reassembles it; each message is one segment (split only when it does
//! not fit in one IP packet).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW: the packet starts with its IP header.
pub const LINKTYPE_RAW: u32 = 101;
/// The pcap magic (microsecond timestamps), written in native order.
pub const MAGIC: u32 = 0xa1b2_c3d4;
/// The snapshot length declared (no packet written is longer).
pub const SNAPLEN: u32 = 65_535;
/// The first sequence number of each direction of a connection.
pub const FIRST_SEQ: u32 = 1;
/// Most payload bytes in one made-up packet (what fits in an IPv6
/// payload length with a TCP header, and an IPv4 total length).
const MAX_SEGMENT: usize = 65_535 - 60;
/// Most connections whose sequence numbers are kept; past it the table
/// starts again (a reader then sees a jump on the old ones).
const MAX_CONNECTIONS: usize = 4096;

/// IP protocol numbers.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Which way a packet went, seen from the local end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From `local` to `remote`.
    Out,
    /// From `remote` to `local`.
    In,
}

/// The next sequence number each way of one connection.
#[derive(Debug, Clone, Copy)]
struct Seqs {
    out: u32,
    inn: u32,
}

/// Writes pcap records to `W`.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    written: u64,
    ip_id: u16,
    streams: HashMap<(SocketAddr, SocketAddr), Seqs>,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_ne_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter {
            out,
            written: header.len() as u64,
            ip_id: 0,
            streams: HashMap::new(),
        })
    }

    /// Bytes written so far (the file's size).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// One UDP datagram.
    pub fn udp(
        &mut self,
        time: SystemTime,
        way: Way,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let (src, dst) = ends(way, local, remote);
        let payload = payload.get(..MAX_SEGMENT).unwrap_or(payload);
        let mut l4 = Vec::with_capacity(8 + payload.len());
        l4.extend_from_slice(&src.port().to_be_bytes());
        l4.extend_from_slice(&dst.port().to_be_bytes());
        l4.extend_from_slice(&len16(8 + payload.len()).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        self.packet(time, src.ip(), dst.ip(), UDP, l4, 6)
    }

    /// One message on a stream connection (TCP, or TLS's plaintext):
    /// one segment (more when it does not fit), the sequence number of its
    /// direction advancing by its length.
    pub fn tcp(
        &mut self,
        time: SystemTime,
        way: Way,
        local: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        if self.streams.len() >= MAX_CONNECTIONS && !self.streams.contains_key(&(local, remote)) {
            self.streams.clear();
        }
        let seqs = self.streams.entry((local, remote)).or_insert(Seqs {
            out: FIRST_SEQ,
            inn: FIRST_SEQ,
        });
        let (src, dst) = ends(way, local, remote);
        let mut segments = Vec::new();
        for chunk in payload.chunks(MAX_SEGMENT) {
            let (seq, ack) = match way {
                Way::Out => (seqs.out, seqs.inn),
                Way::In => (seqs.inn, seqs.out),
            };
            let advanced = seq.wrapping_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
            match way {
                Way::Out => seqs.out = advanced,
                Way::In => seqs.inn = advanced,
            }
            let mut l4 = Vec::with_capacity(20 + chunk.len());
            l4.extend_from_slice(&src.port().to_be_bytes());
            l4.extend_from_slice(&dst.port().to_be_bytes());
            l4.extend_from_slice(&seq.to_be_bytes());
            l4.extend_from_slice(&ack.to_be_bytes());
            l4.push(5 << 4); // data offset: 5 words
            l4.push(0x18); // PSH, ACK
            l4.extend_from_slice(&65_535u16.to_be_bytes()); // window
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            l4.extend_from_slice(chunk);
            segments.push(l4);
        }
        for l4 in segments {
            self.packet(time, src.ip(), dst.ip(), TCP, l4, 16)?;
        }
        Ok(())
    }

    /// Forgets a connection's sequence numbers.
    pub fn forget(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.streams.remove(&(local, remote));
    }

    /// Flushes the writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Puts the IP header before `l4` (whose checksum, at
    /// `checksum_at`, is filled in) and writes the record.
    fn packet(
        &mut self,
        time: SystemTime,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        mut l4: Vec<u8>,
        checksum_at: usize,
    ) -> io::Result<()> {
        let (src, dst) = same_family(src, dst);
        let mut packet = Vec::with_capacity(40 + l4.len());
        let mut pseudo = Vec::with_capacity(40);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                let mut h = Vec::with_capacity(20);
                h.push(0x45);
                h.push(0);
                h.extend_from_slice(&len16(20 + l4.len()).to_be_bytes());
                h.extend_from_slice(&self.ip_id.to_be_bytes());
                h.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
                h.push(64);
                h.push(protocol);
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let sum = checksum(&[&h]);
                if let Some(c) = h.get_mut(10..12) {
                    c.copy_from_slice(&sum.to_be_bytes());
                }
                packet.extend_from_slice(&h);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.push(0);
                pseudo.push(protocol);
                pseudo.extend_from_slice(&len16(l4.len()).to_be_bytes());
            }
            (s, d) => {
                let s = v6(s);
                let d = v6(d);
                packet.extend_from_slice(&[0x60, 0, 0, 0]);
                packet.extend_from_slice(&len16(l4.len()).to_be_bytes());
                packet.push(protocol);
                packet.push(64);
                packet.extend_from_slice(&s.octets());
                packet.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&u32::try_from(l4.len()).unwrap_or(0).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        let mut sum = checksum(&[&pseudo, &l4]);
        if protocol == UDP && sum == 0 {
            sum = 0xffff;
        }
        if let Some(c) = l4.get_mut(checksum_at..checksum_at + 2) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
        packet.extend_from_slice(&l4);
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let mut record = Vec::with_capacity(16 + packet.len());
        record.extend_from_slice(
            &u32::try_from(since.as_secs())
                .unwrap_or(u32::MAX)
                .to_ne_bytes(),
        );
        record.extend_from_slice(&since.subsec_micros().to_ne_bytes());
        record.extend_from_slice(&len.to_ne_bytes());
        record.extend_from_slice(&len.to_ne_bytes());
        record.extend_from_slice(&packet);
        self.out.write_all(&record)?;
        self.written += record.len() as u64;
        Ok(())
    }
}

fn ends(way: Way, local: SocketAddr, remote: SocketAddr) -> (SocketAddr, SocketAddr) {
    match way {
        Way::Out => (local, remote),
        Way::In => (remote, local),
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family: IPv4 when both are (or map to) IPv4,
/// else IPv6 (a wildcard IPv4 local address beside an IPv6 peer becomes
/// `::`).
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let a = a.to_canonical();
    let b = b.to_canonical();
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
        (IpAddr::V4(x), v6 @ IpAddr::V6(_)) if x == Ipv4Addr::UNSPECIFIED => {
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), v6)
        }
        (v6 @ IpAddr::V6(_), IpAddr::V4(x)) if x == Ipv4Addr::UNSPECIFIED => {
            (v6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        }
        (a, b) => (IpAddr::V6(v6(a)), IpAddr::V6(v6(b))),
    }
}

/// The Internet checksum (RFC 1071) over the parts, one after the other
/// (each but the last of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            if let [a, b] = w {
                sum += u32::from(u16::from_be_bytes([*a, *b]));
            }
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    fn be16(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    fn be32(b: &[u8], i: usize) -> u32 {
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// The records of a file: (seconds, microseconds, packet).
    fn records(file: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 24;
        while i < file.len() {
            let incl = u32_at(file, i + 8) as usize;
            assert_eq!(incl, u32_at(file, i + 12) as usize, "nothing cut");
            out.push((
                u32_at(file, i),
                u32_at(file, i + 4),
                file[i + 16..i + 16 + incl].to_vec(),
            ));
            i += 16 + incl;
        }
        assert_eq!(i, file.len(), "records end where the file ends");
        out
    }

    #[test]
    fn the_file_header_is_classic_pcap_raw_ip() {
        let w = PcapWriter::new(Vec::new()).unwrap();
        let file = w.out;
        assert_eq!(file.len(), 24);
        assert_eq!(u32_at(&file, 0), MAGIC);
        assert_eq!(u16::from_ne_bytes([file[4], file[5]]), 2);
        assert_eq!(u16::from_ne_bytes([file[6], file[7]]), 4);
        assert_eq!(u32_at(&file, 16), SNAPLEN);
        assert_eq!(u32_at(&file, 20), 101);
    }

    #[test]
    fn a_udp_datagram_gets_ipv4_and_udp_headers_with_its_lengths() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let local: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let remote: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let payload = b"OPTIONS sip:a@b SIP/2.0\r\n\r\n";
        w.udp(at(1000, 250), Way::Out, local, remote, payload)
            .unwrap();
        w.udp(at(1001, 0), Way::In, local, remote, b"xy").unwrap();
        assert_eq!(w.written(), w.out.len() as u64);
        let recs = records(&w.out);
        assert_eq!(recs.len(), 2);
        let (s, us, p) = &recs[0];
        assert_eq!((*s, *us), (1000, 250));
        assert_eq!(p.len(), 20 + 8 + payload.len());
        assert_eq!(p[0], 0x45);
        assert_eq!(be16(p, 2) as usize, p.len(), "IPv4 total length");
        assert_eq!(p[9], 17, "UDP");
        assert_eq!(&p[12..16], &[127, 0, 0, 1]);
        assert_eq!(&p[16..20], &[127, 0, 0, 2]);
        assert_eq!(checksum(&[&p[..20]]), 0, "IPv4 header checksum");
        assert_eq!(be16(p, 20), 5070);
        assert_eq!(be16(p, 22), 5060);
        assert_eq!(be16(p, 24) as usize, 8 + payload.len(), "UDP length");
        assert_eq!(&p[28..], payload);
        let mut pseudo = vec![127, 0, 0, 1, 127, 0, 0, 2, 0, 17];
        pseudo.extend_from_slice(&p[24..26]);
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0, "UDP checksum");
        // received: the ends swap
        let p = &recs[1].2;
        assert_eq!(&p[12..16], &[127, 0, 0, 2]);
        assert_eq!(be16(p, 20), 5060);
        assert_eq!(be16(p, 22), 5070);
    }

    #[test]
    fn ipv6_gets_a_40_byte_header_with_its_payload_length() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let local: SocketAddr = "[::1]:5070".parse().unwrap();
        let remote: SocketAddr = "[::1]:5060".parse().unwrap();
        w.udp(at(1, 0), Way::Out, local, remote, b"hello").unwrap();
        let p = &records(&w.out)[0].2;
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(be16(p, 4), 8 + 5, "IPv6 payload length");
        assert_eq!(p[6], 17);
        assert_eq!(p.len(), 40 + 8 + 5);
        assert_eq!(be16(p, 40), 5070);
    }

    #[test]
    fn a_stream_keeps_a_sequence_number_per_direction() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        w.tcp(at(1, 0), Way::Out, local, remote, &[b'a'; 100])
            .unwrap();
        w.tcp(at(1, 1), Way::In, local, remote, &[b'b'; 30])
            .unwrap();
        w.tcp(at(1, 2), Way::Out, local, remote, &[b'c'; 7])
            .unwrap();
        w.tcp(at(1, 3), Way::Out, other, remote, &[b'd'; 5])
            .unwrap();
        let recs = records(&w.out);
        let tcp = |i: usize| {
            let p = &recs[i].2;
            assert_eq!(p[9], 6, "TCP");
            assert_eq!(be16(p, 2) as usize, p.len());
            assert_eq!(p[20 + 12] >> 4, 5, "data offset");
            assert_eq!(p[20 + 13], 0x18, "PSH ACK");
            (be16(p, 20), be32(p, 24), be32(p, 28), p.len() - 40)
        };
        assert_eq!(tcp(0), (40000, FIRST_SEQ, FIRST_SEQ, 100));
        assert_eq!(tcp(1), (5060, FIRST_SEQ, FIRST_SEQ + 100, 30));
        assert_eq!(tcp(2), (40000, FIRST_SEQ + 100, FIRST_SEQ + 30, 7));
        // another connection starts on its own
        assert_eq!(tcp(3), (40001, FIRST_SEQ, FIRST_SEQ, 5));
    }

    #[test]
    fn a_message_larger_than_a_packet_is_split_with_its_sequence_numbers() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let big = vec![b'x'; MAX_SEGMENT + 10];
        w.tcp(at(1, 0), Way::Out, local, remote, &big).unwrap();
        let recs = records(&w.out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].2.len() - 40, MAX_SEGMENT);
        assert_eq!(be16(&recs[0].2, 2) as usize, recs[0].2.len());
        assert_eq!(be32(&recs[1].2, 24), FIRST_SEQ + MAX_SEGMENT as u32);
        assert_eq!(recs[1].2.len() - 40, 10);
    }

    #[test]
    fn the_internet_checksum_of_a_known_header() {
        // RFC 1071 example words
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        // odd length: padded with a zero byte
        assert_eq!(checksum(&[&[0x01]]), !0x0100);
    }
}
