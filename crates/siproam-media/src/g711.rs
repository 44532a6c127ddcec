//! ITU-T G.711 µ-law and A-law companding.
//!
//! The arithmetic is the classic reference implementation (Sun Microsystems'
//! `g711.c`, the one most stacks carry): 16-bit linear PCM in, one 8-bit code
//! out, and back. The codes are the ones that go on the wire, so A-law has its
//! even bits inverted (`0xD5` is the smallest positive value) and µ-law is
//! sent inverted (`0xFF` is zero).
//!
//! µ-law has two codes for zero (`0xFF` for +0 and `0x7F` for −0); both decode
//! to `0`, which encodes back to `0xFF`. Every other code survives
//! decode-then-encode unchanged. A-law has no zero code: every code round-trips.

/// Samples per 20 ms frame at 8 kHz: the one frame size this crate sends.
pub const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of 16-bit linear PCM at 8 kHz.
pub type Frame = [i16; FRAME_SAMPLES];

/// The G.711 sample rate (and RTP clock rate of PCMU, PCMA and
/// telephone-event in this crate).
pub const SAMPLE_RATE: u32 = 8000;

/// µ-law bias added before the segment search (0x84 = 132).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent, in 14-bit units.
const ULAW_CLIP: i32 = 8159;

/// The upper end of each µ-law segment, in 14-bit biased units.
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// The upper end of each A-law segment, in 13-bit units.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// The segment (0..=7) whose end is at or above `value`, or 8 when it is
/// beyond the last one.
// evaluated at compile time only: an index out of range fails the build
#[allow(clippy::indexing_slicing)]
const fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    let mut seg = 0;
    while seg < 8 {
        if value <= ends[seg] {
            return seg as u8;
        }
        seg += 1;
    }
    8
}

/// µ-law encoding by the reference formula (the table is built from it).
const fn ulaw_encode_formula(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 2;
    let mask: u8 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS >> 2;
    let seg = segment(pcm, &ULAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    // Four quantisation bits; the mask keeps the value in 0..=15.
    let quant = ((pcm >> (seg + 1)) & 0x0F) as u8;
    ((seg << 4) | quant) ^ mask
}

/// µ-law decoding by the reference formula.
const fn ulaw_decode_formula(code: u8) -> i16 {
    let code = !code;
    let quant = (code & 0x0F) as i32;
    let seg = ((code & 0x70) >> 4) as u32;
    let t = ((quant << 3) + ULAW_BIAS) << seg;
    let value = if code & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    };
    // |value| <= 32124 by construction.
    value as i16
}

/// A-law encoding by the reference formula.
const fn alaw_encode_formula(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &ALAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 1 } else { seg as u32 };
    let quant = ((pcm >> shift) & 0x0F) as u8;
    ((seg << 4) | quant) ^ mask
}

/// A-law decoding by the reference formula.
const fn alaw_decode_formula(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut t = ((code & 0x0F) as i32) << 4;
    let seg = ((code & 0x70) >> 4) as u32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    let value = if code & 0x80 != 0 { t } else { -t };
    // |value| <= 32256 by construction.
    value as i16
}

/// µ-law codes by the sample's top 14 bits (`sample >> 2`, two's
/// complement): the formula only looks at those.
// evaluated at compile time only: an index out of range fails the build
#[allow(clippy::indexing_slicing)]
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < 1 << 14 {
        table[i] = ulaw_encode_formula(((i as u16) << 2) as i16);
        i += 1;
    }
    table
};

/// A-law codes by the sample's top 13 bits (`sample >> 3`).
// evaluated at compile time only: an index out of range fails the build
#[allow(clippy::indexing_slicing)]
static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < 1 << 13 {
        table[i] = alaw_encode_formula(((i as u16) << 3) as i16);
        i += 1;
    }
    table
};

/// Samples by µ-law code.
// evaluated at compile time only: an index out of range fails the build
#[allow(clippy::indexing_slicing)]
static ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_decode_formula(i as u8);
        i += 1;
    }
    table
};

/// Samples by A-law code.
// evaluated at compile time only: an index out of range fails the build
#[allow(clippy::indexing_slicing)]
static ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_decode_formula(i as u8);
        i += 1;
    }
    table
};

/// Encodes one 16-bit linear sample as a µ-law code (as sent on the wire).
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let i = usize::from((sample as u16) >> 2);
    ULAW_ENCODE.get(i).copied().unwrap_or(0xFF)
}

/// Decodes one µ-law code (as received on the wire) to a 16-bit linear sample.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE.get(usize::from(code)).copied().unwrap_or(0)
}

/// Encodes one 16-bit linear sample as an A-law code (as sent on the wire,
/// even bits inverted).
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    let i = usize::from((sample as u16) >> 3);
    ALAW_ENCODE.get(i).copied().unwrap_or(0xD5)
}

/// Decodes one A-law code (as received on the wire) to a 16-bit linear sample.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE.get(usize::from(code)).copied().unwrap_or(0)
}

/// The audio codecs this crate sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// G.711 µ-law, static RTP payload type 0 (RFC 3551).
    Pcmu,
    /// G.711 A-law, static RTP payload type 8 (RFC 3551).
    Pcma,
}

impl Codec {
    /// The static RTP payload type (0 for PCMU, 8 for PCMA).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec a static payload type names, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The SDP encoding name (`PCMU`, `PCMA`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Encodes one sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw_encode(sample),
            Codec::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes one code.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_decode(code),
            Codec::Pcma => alaw_decode(code),
        }
    }

    /// Encodes samples, appending one code per sample to `out`.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Codec::Pcmu => out.extend(samples.iter().map(|s| ulaw_encode(*s))),
            Codec::Pcma => out.extend(samples.iter().map(|s| alaw_encode(*s))),
        }
    }

    /// Decodes codes, appending one sample per code to `out`.
    pub fn decode(self, codes: &[u8], out: &mut Vec<i16>) {
        match self {
            Codec::Pcmu => out.extend(codes.iter().map(|c| ulaw_decode(*c))),
            Codec::Pcma => out.extend(codes.iter().map(|c| alaw_decode(*c))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    /// The tables give what the reference formulas give, for every sample
    /// and every code.
    #[test]
    fn tables_equal_the_formulas_for_all_inputs() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(sample), ulaw_encode_formula(sample), "{sample}");
            assert_eq!(alaw_encode(sample), alaw_encode_formula(sample), "{sample}");
        }
        for code in 0..=u8::MAX {
            assert_eq!(ulaw_decode(code), ulaw_decode_formula(code), "{code:#x}");
            assert_eq!(alaw_decode(code), alaw_decode_formula(code), "{code:#x}");
        }
    }

    /// The µ-law reconstruction value of G.711 Table 2a for segment `seg`
    /// (0..=7) and step `q` (0..=15), in the 14-bit scale of the table
    /// (0, 2, … 30; 33, 37, … 93; 99, 107, …; … 8031), scaled to 16 bits.
    fn ulaw_table(seg: u32, q: i32) -> i32 {
        (((2 * q + 33) << seg) - 33) * 4
    }

    /// The A-law reconstruction value of G.711 Table 1a for segment `seg`
    /// and step `q`, in the 13-bit scale of the table (1, 3, … 31;
    /// 33, 35, … 63; 66, 70, … 126; … 4032), scaled to 16 bits.
    fn alaw_table(seg: u32, q: i32) -> i32 {
        let v = if seg == 0 {
            2 * q + 1
        } else {
            (2 * q + 33) << (seg - 1)
        };
        v * 8
    }

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // First step of the first segment: 2 in 14-bit units.
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        // First value of segment 2: 33 in 14-bit units.
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(ulaw_encode(132), 0xEF);
        assert_eq!(ulaw_encode(-132), 0x6F);
        // -1 >> 2 is -1: a negative input never encodes as either zero.
        assert_eq!(ulaw_encode(-1), 0x7E);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(8), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
    }

    #[test]
    fn ulaw_decoder_matches_table_2a() {
        for code in 0..=255u8 {
            let inv = !code;
            let seg = u32::from((inv >> 4) & 0x07);
            let q = i32::from(inv & 0x0F);
            let magnitude = ulaw_table(seg, q);
            let expected = if code & 0x80 != 0 {
                magnitude
            } else {
                -magnitude
            };
            assert_eq!(i32::from(ulaw_decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn alaw_decoder_matches_table_1a() {
        for code in 0..=255u8 {
            let x = code ^ 0x55;
            let seg = u32::from((x >> 4) & 0x07);
            let q = i32::from(x & 0x0F);
            let magnitude = alaw_table(seg, q);
            let expected = if code & 0x80 != 0 {
                magnitude
            } else {
                -magnitude
            };
            assert_eq!(i32::from(alaw_decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn every_ulaw_code_round_trips_except_negative_zero() {
        for code in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(code));
            if code == 0x7F {
                assert_eq!(back, 0xFF, "-0 encodes as +0");
            } else {
                assert_eq!(back, code, "code {code:#04x}");
            }
        }
    }

    #[test]
    fn every_alaw_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
    }

    fn check_monotonic_and_close(encode: fn(i16) -> u8, decode: fn(u8) -> i16) {
        let mut previous = i32::MIN;
        for x in i16::MIN..=i16::MAX {
            let y = i32::from(decode(encode(x)));
            assert!(y >= previous, "not monotonic at {x}: {y} < {previous}");
            previous = y;
            // Relative error of a logarithmic quantiser: at most half a step,
            // a step being 1/16 of the segment's base; plus the clipping of
            // the top of the range (±32124 / ±32256).
            let err = (y - i32::from(x)).abs();
            let bound = (i32::from(x).abs() / 16).max(16);
            assert!(err <= bound, "{x} -> {y}: error {err} > {bound}");
        }
    }

    #[test]
    fn ulaw_full_range_is_monotonic_and_close() {
        check_monotonic_and_close(ulaw_encode, ulaw_decode);
    }

    #[test]
    fn alaw_full_range_is_monotonic_and_close() {
        check_monotonic_and_close(alaw_encode, alaw_decode);
    }

    #[test]
    fn codec_payload_types() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(18), None);
    }
}
