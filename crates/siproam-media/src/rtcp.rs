//! RTCP (RFC 3550 §6): the compound reports this session sends and what it
//! reads from the peer's. Packet layout is `rtcp-types`'; this module only
//! maps between it and the session's plain values.

use rtcp_types::prelude::*;
use rtcp_types::{
    Bye, Compound, Packet, ReceiverReport, ReportBlock, ReportBlockBuilder, Sdes, SdesChunk,
    SdesItem, SenderReport,
};

/// The sender-information section of a sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// The sender's wallclock (64-bit NTP format) when the report was made.
    pub ntp_timestamp: u64,
    /// The RTP timestamp matching `ntp_timestamp`.
    pub rtp_timestamp: u32,
    /// RTP packets sent since the stream began.
    pub packet_count: u32,
    /// RTP payload octets sent since the stream began.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1): what a receiver saw of one
/// source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlockInfo {
    /// The source the block is about.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since reception began (24-bit signed: duplicates can make
    /// it negative).
    pub cumulative_lost: i32,
    /// Highest sequence number received, with the count of wraps in the top
    /// 16 bits.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter, in timestamp units (1/8000 s here).
    pub jitter: u32,
    /// The middle 32 bits of the NTP timestamp of the last sender report
    /// received from the source (0 if none).
    pub last_sr: u32,
    /// The delay between receiving that sender report and sending this
    /// block, in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

/// A sender or receiver report received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpReport {
    /// The reporter's SSRC.
    pub ssrc: u32,
    /// Present for a sender report.
    pub sender: Option<SenderInfo>,
    /// The reception report blocks, about any source.
    pub blocks: Vec<ReportBlockInfo>,
}

/// What one received compound packet held that the session acts on.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub reports: Vec<RtcpReport>,
    pub byes: Vec<u32>,
}

/// Sign-extends a 24-bit cumulative-lost field.
fn cumulative_from_wire(raw: u32) -> i32 {
    let raw = raw & 0x00FF_FFFF;
    if raw & 0x0080_0000 != 0 {
        (raw | 0xFF00_0000) as i32
    } else {
        raw as i32
    }
}

/// Clamps a loss count to the 24-bit signed field and encodes it.
fn cumulative_to_wire(lost: i64) -> u32 {
    let clamped = lost.clamp(-0x0080_0000, 0x007F_FFFF);
    (clamped as i32 as u32) & 0x00FF_FFFF
}

fn block_info(block: &ReportBlock<'_>) -> ReportBlockInfo {
    ReportBlockInfo {
        ssrc: block.ssrc(),
        fraction_lost: block.fraction_lost(),
        cumulative_lost: cumulative_from_wire(block.cumulative_lost()),
        extended_highest_sequence: block.extended_sequence_number(),
        jitter: block.interarrival_jitter(),
        last_sr: block.last_sender_report_timestamp(),
        delay_since_last_sr: block.delay_since_last_sender_report_timestamp(),
    }
}

/// Parses a compound RTCP packet. Unknown packet types are skipped; a
/// malformed packet fails the whole datagram.
pub(crate) fn parse(data: &[u8]) -> Option<Parsed> {
    let compound = Compound::parse(data).ok()?;
    let mut parsed = Parsed::default();
    for packet in compound {
        match packet.ok()? {
            Packet::Sr(sr) => parsed.reports.push(sender_report(&sr)),
            Packet::Rr(rr) => parsed.reports.push(receiver_report(&rr)),
            Packet::Bye(bye) => parsed.byes.extend(bye_sources(&bye)),
            _ => {}
        }
    }
    Some(parsed)
}

fn sender_report(sr: &SenderReport<'_>) -> RtcpReport {
    RtcpReport {
        ssrc: sr.ssrc(),
        sender: Some(SenderInfo {
            ntp_timestamp: sr.ntp_timestamp(),
            rtp_timestamp: sr.rtp_timestamp(),
            packet_count: sr.packet_count(),
            octet_count: sr.octet_count(),
        }),
        blocks: sr.report_blocks().map(|b| block_info(&b)).collect(),
    }
}

fn receiver_report(rr: &ReceiverReport<'_>) -> RtcpReport {
    RtcpReport {
        ssrc: rr.ssrc(),
        sender: None,
        blocks: rr.report_blocks().map(|b| block_info(&b)).collect(),
    }
}

fn bye_sources(bye: &Bye<'_>) -> Vec<u32> {
    bye.ssrcs().collect()
}

/// The reception block this session reports, with loss as a plain count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutgoingBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: i64,
    pub extended_highest_sequence: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

fn block_builder(b: &OutgoingBlock) -> ReportBlockBuilder {
    ReportBlock::builder(b.ssrc)
        .fraction_lost(b.fraction_lost)
        .cumulative_lost(cumulative_to_wire(b.cumulative_lost))
        .extended_sequence_number(b.extended_highest_sequence)
        .interarrival_jitter(b.jitter)
        .last_sender_report_timestamp(b.last_sr)
        .delay_since_last_sender_report_timestamp(b.delay_since_last_sr)
}

/// Builds a compound packet: SR (if `sender`) or RR, then SDES with the
/// CNAME, then BYE if `bye`.
pub(crate) fn build(
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<OutgoingBlock>,
    cname: &str,
    bye: bool,
) -> Option<Vec<u8>> {
    let mut compound = Compound::builder();
    if let Some(info) = sender {
        let mut sr = SenderReport::builder(ssrc)
            .ntp_timestamp(info.ntp_timestamp)
            .rtp_timestamp(info.rtp_timestamp)
            .packet_count(info.packet_count)
            .octet_count(info.octet_count);
        if let Some(b) = &block {
            sr = sr.add_report_block(block_builder(b));
        }
        compound = compound.add_packet(sr);
    } else {
        let mut rr = ReceiverReport::builder(ssrc);
        if let Some(b) = &block {
            rr = rr.add_report_block(block_builder(b));
        }
        compound = compound.add_packet(rr);
    }
    let sdes = Sdes::builder()
        .add_chunk(SdesChunk::builder(ssrc).add_item(SdesItem::builder(SdesItem::CNAME, cname)));
    compound = compound.add_packet(sdes);
    if bye {
        compound = compound.add_packet(Bye::builder().add_source(ssrc));
    }
    let size = compound.calculate_size().ok()?;
    let mut buf = vec![0u8; size];
    let written = compound.write_into(&mut buf).ok()?;
    buf.truncate(written);
    Some(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn cumulative_lost_is_24_bit_signed() {
        assert_eq!(cumulative_from_wire(cumulative_to_wire(5)), 5);
        assert_eq!(cumulative_from_wire(cumulative_to_wire(-3)), -3);
        assert_eq!(cumulative_to_wire(-1), 0x00FF_FFFF);
        assert_eq!(
            cumulative_from_wire(cumulative_to_wire(1 << 30)),
            0x007F_FFFF
        );
    }

    #[test]
    fn sender_report_round_trip() {
        let info = SenderInfo {
            ntp_timestamp: 0x0102_0304_0506_0708,
            rtp_timestamp: 160_000,
            packet_count: 250,
            octet_count: 40_000,
        };
        let block = OutgoingBlock {
            ssrc: 0xABCD,
            fraction_lost: 12,
            cumulative_lost: -2,
            extended_highest_sequence: 0x0001_0005,
            jitter: 40,
            last_sr: 0x0304_0506,
            delay_since_last_sr: 65536,
        };
        let bytes = build(0x1234, Some(info), Some(block), "me@host", true).unwrap();
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.byes, [0x1234]);
        assert_eq!(parsed.reports.len(), 1);
        let report = &parsed.reports[0];
        assert_eq!(report.ssrc, 0x1234);
        assert_eq!(report.sender, Some(info));
        assert_eq!(
            report.blocks,
            [ReportBlockInfo {
                ssrc: 0xABCD,
                fraction_lost: 12,
                cumulative_lost: -2,
                extended_highest_sequence: 0x0001_0005,
                jitter: 40,
                last_sr: 0x0304_0506,
                delay_since_last_sr: 65536,
            }]
        );
    }

    #[test]
    fn receiver_report_without_blocks() {
        let bytes = build(7, None, None, "x", false).unwrap();
        // RR header (8) + SDES with one CNAME chunk.
        assert_eq!(bytes[1], 201);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.reports[0].sender, None);
        assert!(parsed.reports[0].blocks.is_empty());
        assert!(parse(&bytes[..5]).is_none());
    }
}
