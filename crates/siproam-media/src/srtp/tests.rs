#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SUITES: [SrtpSuite; 3] = [
    SrtpSuite::AesCm128HmacSha1_80,
    SrtpSuite::AesCm128HmacSha1_32,
    SrtpSuite::AeadAes128Gcm,
];

fn key(suite: SrtpSuite, fill: u8) -> SrtpKey {
    let material: Vec<u8> = (0..suite.key_material_len())
        .map(|i| fill.wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    SrtpKey::new(suite, &material).unwrap()
}

/// An RTP packet: V=2, PT 0, the sequence number, a timestamp, the SSRC and
/// a payload that depends on the sequence number.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A receiver report with no report blocks, then an SDES-sized tail.
fn rtcp(ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0, 1, fill, fill, fill, fill]);
    p
}

fn pair(suite: SrtpSuite) -> (SrtpContext, SrtpContext) {
    let k = key(suite, 1);
    (SrtpContext::new(&k), SrtpContext::new(&k))
}

// ---- RFC 3711 Appendix B ----

/// RFC 3711 Appendix B.2: the AES-CM keystream for session key
/// 2B7E1516..., salt F0F1...FD, SSRC 0, index 0 (65282 blocks).
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
    let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let mut stream = vec![0u8; 65282 * 16];
    aes_ctr(&Aes128::new(&key.into()), iv).apply_keystream(&mut stream);
    assert_eq!(
        stream[..48].to_vec(),
        hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )
    );
    assert_eq!(
        stream[0xfeff * 16..].to_vec(),
        hex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44"
        )
    );
}

/// RFC 3711 Appendix B.3: the session keys derived from master key
/// E1F97A0D... and master salt 0EC675AD....
#[test]
fn rfc3711_b3_key_derivation() {
    let master = Aes128::new(
        &<[u8; 16]>::try_from(hex("E1F97A0D3E018BE0D64FA32C06DE4139"))
            .unwrap()
            .into(),
    );
    let salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
    let mut cipher = [0u8; 16];
    derive(&master, &salt, label::RTP_ENCRYPTION, &mut cipher);
    assert_eq!(cipher.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut session_salt = [0u8; 14];
    derive(&master, &salt, label::RTP_SALT, &mut session_salt);
    assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; 94];
    derive(&master, &salt, label::RTP_AUTH, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

// ---- libsrtp's reference packets (test/srtp_driver.c, srtp_validate and
// srtp_validate_gcm), made from master keys: they also pin the key derivation.

const LIBSRTP_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";
const LIBSRTP_RTP: &str = "800f1234decafbadcafebabe abababababababababababababababab";
const LIBSRTP_RTCP: &str = "81c8000bcafebabe abababababababababababababababab";

/// libsrtp srtp_validate: AES_CM_128_HMAC_SHA1_80, SSRC 0xcafebabe, seq 0x1234.
#[test]
fn libsrtp_reference_packet_sha1_80() {
    let key = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &hex(LIBSRTP_KEY)).unwrap();
    let expected =
        hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
    let mut packet = hex(LIBSRTP_RTP);
    SrtpContext::new(&key).protect_rtp(&mut packet).unwrap();
    assert_eq!(packet, expected);
    let len = SrtpContext::new(&key).unprotect_rtp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(LIBSRTP_RTP)[..]);
}

/// The same packet with AES_CM_128_HMAC_SHA1_32: the tag is the first 4
/// octets of the 80-bit one.
#[test]
fn libsrtp_reference_packet_sha1_32() {
    let key = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_32, &hex(LIBSRTP_KEY)).unwrap();
    let expected = hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc");
    let mut packet = hex(LIBSRTP_RTP);
    SrtpContext::new(&key).protect_rtp(&mut packet).unwrap();
    assert_eq!(packet, expected);
    let len = SrtpContext::new(&key).unprotect_rtp(&mut packet).unwrap();
    assert_eq!(len, 28);
    assert_eq!(packet[..len], hex(LIBSRTP_RTP)[..]);
}

/// libsrtp srtp_validate: the SRTCP packet, SRTCP index 1 (libsrtp counts
/// from 1, RFC 3711 from 0, so the sender is set to 1 here).
#[test]
fn libsrtp_reference_srtcp_sha1_80() {
    let key = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &hex(LIBSRTP_KEY)).unwrap();
    let expected =
        hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");
    let mut sender = SrtpContext::new(&key);
    sender.rtcp_index = 1;
    let mut packet = hex(LIBSRTP_RTCP);
    sender.protect_rtcp(&mut packet).unwrap();
    assert_eq!(packet, expected);
    let len = SrtpContext::new(&key).unprotect_rtcp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(LIBSRTP_RTCP)[..]);
}

/// libsrtp srtp_validate_gcm: AEAD_AES_128_GCM from master key 00..0f and
/// 12-octet master salt a0..ab; pins the KDF with the 96-bit salt.
#[test]
fn libsrtp_reference_packets_gcm() {
    let key = SrtpKey::new(
        SrtpSuite::AeadAes128Gcm,
        &hex("000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab"),
    )
    .unwrap();
    let mut sender = SrtpContext::new(&key);
    let mut receiver = SrtpContext::new(&key);

    let mut packet = hex(LIBSRTP_RTP);
    sender.protect_rtp(&mut packet).unwrap();
    assert_eq!(
        packet,
        hex("800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e
             d2976826f796b201df3131a127e8a392")
    );
    let len = receiver.unprotect_rtp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(LIBSRTP_RTP)[..]);

    sender.rtcp_index = 1;
    let mut packet = hex(LIBSRTP_RTCP);
    sender.protect_rtcp(&mut packet).unwrap();
    assert_eq!(
        packet,
        hex("81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025
             c52c6fbea2b3b446ea31123ba88ce61e 80000001")
    );
    let len = receiver.unprotect_rtcp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(LIBSRTP_RTCP)[..]);
}

// ---- RFC 7714 §16.1 and §17: stated with the session key and salt ----

const RFC7714_KEY: &str = "000102030405060708090a0b0c0d0e0f";
/// "Quid pro quo"
const RFC7714_SALT: &str = "517569642070726f2071756f";
const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e6973
                           20646976697361 20696e207061727465732074726573";
/// The packet §17.1 to §17.3 protect (SSRC "Mars").
const RFC7714_RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e930
                            4c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

fn rfc7714_context() -> SrtpContext {
    let key: [u8; 16] = hex(RFC7714_KEY).try_into().unwrap();
    let salt: [u8; 12] = hex(RFC7714_SALT).try_into().unwrap();
    SrtpContext {
        suite: SrtpSuite::AeadAes128Gcm,
        transform: Transform::gcm(&key, salt, &key, salt),
        ssrcs: SsrcTable::new(),
        rtcp_index: 0,
    }
}

/// RFC 7714 §16.1.1 (encryption) and §16.1.2 (decryption).
#[test]
fn rfc7714_16_1_srtp_gcm() {
    let expected = hex(
        "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b
         36de3adf8833 899d7f27beb16a9152cf765ee4390cce",
    );
    let mut packet = hex(RFC7714_RTP);
    rfc7714_context().protect_rtp(&mut packet).unwrap();
    assert_eq!(packet, expected);
    let len = rfc7714_context().unprotect_rtp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(RFC7714_RTP)[..]);
}

/// RFC 7714 §17.1 (SRTCP encryption, index 0x5d4) and its decryption.
#[test]
fn rfc7714_17_1_srtcp_gcm() {
    let expected = hex(
        "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda
         4ce09b4686303ded0bb9275bc84aa458 96cf4d2fc5abf87245d9eade 800005d4",
    );
    let mut sender = rfc7714_context();
    sender.rtcp_index = 0x5d4;
    let mut packet = hex(RFC7714_RTCP);
    sender.protect_rtcp(&mut packet).unwrap();
    assert_eq!(packet, expected);
    let len = rfc7714_context().unprotect_rtcp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(RFC7714_RTCP)[..]);
}

/// RFC 7714 §17.3: an SRTCP packet with E = 0 (authenticated, not
/// encrypted) is accepted; a wrong tag is refused and leaves the bytes.
#[test]
fn rfc7714_17_3_srtcp_gcm_unencrypted() {
    let tagged = hex(
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61
         deadbeefdeadbeefdeadbeefdeadbeefdeadbeef 841dd9683dd78ec92ae58790125f62b3 000005d4",
    );
    let mut packet = tagged.clone();
    let len = rfc7714_context().unprotect_rtcp(&mut packet).unwrap();
    assert_eq!(packet[..len], hex(RFC7714_RTCP)[..]);

    let mut bad = tagged.clone();
    bad[20] ^= 1;
    let copy = bad.clone();
    assert_eq!(
        rfc7714_context().unprotect_rtcp(&mut bad),
        Err(SrtpError::AuthenticationFailed)
    );
    assert_eq!(bad, copy);
}

// ---- suites, keys ----

#[test]
fn suite_names_and_lengths() {
    for suite in SUITES {
        assert_eq!(SrtpSuite::from_sdes_name(suite.sdes_name()), Some(suite));
        assert_eq!(suite.master_key_len(), 16);
        assert_eq!(
            suite.key_material_len(),
            suite.master_key_len() + suite.master_salt_len()
        );
    }
    assert_eq!(
        SrtpSuite::from_sdes_name("AES_CM_128_HMAC_SHA1_80"),
        Some(SrtpSuite::AesCm128HmacSha1_80)
    );
    assert_eq!(SrtpSuite::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
    assert_eq!(SrtpSuite::from_sdes_name("AES_256_CM_HMAC_SHA1_80"), None);
    assert_eq!(SrtpSuite::AesCm128HmacSha1_80.key_material_len(), 30);
    assert_eq!(SrtpSuite::AeadAes128Gcm.key_material_len(), 28);
    assert_eq!(
        [
            SUITES[0].rtp_tag_len(),
            SUITES[1].rtp_tag_len(),
            SUITES[2].rtp_tag_len()
        ],
        [10, 4, 16]
    );
    assert_eq!(
        [
            SUITES[0].rtcp_overhead(),
            SUITES[1].rtcp_overhead(),
            SUITES[2].rtcp_overhead()
        ],
        [14, 14, 20]
    );
}

#[test]
fn key_length_is_checked_and_debug_hides_the_key() {
    assert_eq!(
        SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[0; 30]),
        Err(SrtpError::BadKeyLength {
            suite: SrtpSuite::AeadAes128Gcm,
            expected: 28,
            got: 30
        })
    );
    assert!(SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0; 29]).is_err());
    let key = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0xab; 30]).unwrap();
    assert_eq!(key.suite(), SrtpSuite::AesCm128HmacSha1_80);
    let shown = format!("{key:?} {:?}", SrtpContext::new(&key));
    assert!(shown.contains("AesCm128HmacSha1_80"), "{shown}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
        "{shown}"
    );
}

// ---- round trips ----

#[test]
fn round_trips_all_suites_rtp_and_rtcp() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        for seq in 100..110u16 {
            let plain = rtp(seq, 7);
            let mut packet = Vec::with_capacity(plain.len() + 16);
            packet.extend_from_slice(&plain);
            let capacity = packet.capacity();
            tx.protect_rtp(&mut packet).unwrap();
            assert_eq!(packet.capacity(), capacity, "{suite}: no reallocation");
            assert_eq!(packet.len(), plain.len() + suite.rtp_tag_len());
            assert_eq!(packet[..12], plain[..12], "{suite}: header in the clear");
            assert_ne!(
                packet[12..plain.len()],
                plain[12..],
                "{suite}: payload encrypted"
            );
            let len = rx.unprotect_rtp(&mut packet).unwrap();
            assert_eq!(packet[..len], plain[..], "{suite}");

            let plain = rtcp(7, seq as u8);
            let mut packet = plain.clone();
            tx.protect_rtcp(&mut packet).unwrap();
            assert_eq!(packet.len(), plain.len() + suite.rtcp_overhead());
            assert_eq!(packet[..8], plain[..8]);
            assert_ne!(packet[8..plain.len()], plain[8..]);
            let len = rx.unprotect_rtcp(&mut packet).unwrap();
            assert_eq!(packet[..len], plain[..], "{suite}");
        }
        assert_eq!(tx.rtcp_index, 10);
    }
}

/// CSRCs and a header extension are authenticated (and, for GCM, associated
/// data) but not encrypted.
#[test]
fn csrcs_and_header_extension_stay_in_the_clear() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let mut plain = vec![0x92, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9];
        plain.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // 2 CSRCs
        plain.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
        plain.extend_from_slice(b"payload");
        let mut packet = plain.clone();
        tx.protect_rtp(&mut packet).unwrap();
        assert_eq!(packet[..28], plain[..28], "{suite}");
        assert_ne!(packet[28..plain.len()], plain[28..]);
        // a changed CSRC fails authentication
        let mut forged = packet.clone();
        forged[13] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&mut forged),
            Err(SrtpError::AuthenticationFailed)
        );
        let len = rx.unprotect_rtp(&mut packet).unwrap();
        assert_eq!(packet[..len], plain[..]);
    }
}

#[test]
fn malformed_packets_are_refused() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        // version 1
        let mut p = rtp(1, 1);
        p[0] = 0x40;
        assert_eq!(tx.protect_rtp(&mut p), Err(SrtpError::Malformed));
        // 15 CSRCs announced, none there
        let mut p = rtp(1, 1)[..20].to_vec();
        p[0] = 0x8f;
        assert_eq!(tx.protect_rtp(&mut p), Err(SrtpError::Malformed));
        // extension longer than the packet
        let mut p = vec![
            0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff,
        ];
        assert_eq!(tx.protect_rtp(&mut p), Err(SrtpError::Malformed));
        // extension header cut short
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe];
        assert_eq!(tx.protect_rtp(&mut p), Err(SrtpError::Malformed));
        // too short for a header and a tag
        let short = 12 + suite.rtp_tag_len() - 1;
        assert_eq!(
            rx.unprotect_rtp(&mut vec![0x80; short]),
            Err(SrtpError::Malformed)
        );
        assert_eq!(rx.unprotect_rtp(&mut []), Err(SrtpError::Malformed));
        assert_eq!(
            rx.unprotect_rtcp(&mut [0x80; 12]),
            Err(SrtpError::Malformed)
        );
        assert_eq!(
            tx.protect_rtcp(&mut vec![0x80, 200, 0]),
            Err(SrtpError::Malformed)
        );
        assert_eq!(tx.rtcp_index, 0, "a refused packet uses no index");
        // empty payload is fine
        let mut p = rtp(1, 1)[..12].to_vec();
        tx.protect_rtp(&mut p).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut p), Ok(12));
    }
}

// ---- replay ----

#[test]
fn replay_out_of_order_and_too_old() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let mut sent = Vec::new();
        for seq in 1000..1100u16 {
            let mut p = rtp(seq, 3);
            tx.protect_rtp(&mut p).unwrap();
            sent.push(p);
        }
        let mut p = sent[50].clone();
        assert!(rx.unprotect_rtp(&mut p).is_ok());
        let mut p = sent[50].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut p),
            Err(SrtpError::Replayed),
            "{suite}"
        );
        // later then earlier, inside the window
        for i in [99, 60, 40, 98] {
            let mut p = sent[i].clone();
            assert!(rx.unprotect_rtp(&mut p).is_ok(), "{suite}: {i}");
        }
        let mut p = sent[60].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Replayed));
        // 99 - 36 = 63 behind the highest: the last one in the window
        let mut p = sent[36].clone();
        assert!(rx.unprotect_rtp(&mut p).is_ok());
        // 64 behind: too old
        let mut p = sent[35].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::TooOld));
        let mut p = sent[0].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::TooOld));
    }
}

#[test]
fn bad_tag_changes_nothing() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let mut first = rtp(10, 3);
        tx.protect_rtp(&mut first).unwrap();
        let mut second = rtp(11, 3);
        tx.protect_rtp(&mut second).unwrap();
        for position in [15, second.len() - 1] {
            let mut bad = second.clone();
            bad[position] ^= 0x40;
            let copy = bad.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut bad),
                Err(SrtpError::AuthenticationFailed)
            );
            assert_eq!(bad, copy, "{suite}: the bytes are unchanged");
            assert_eq!(rx.roc(3), None, "{suite}: no state from a failed packet");
        }
        // a far-future sequence number with a bad tag does not move the window
        let mut future = rtp(30000, 3);
        tx.protect_rtp(&mut future).unwrap();
        let last = future.len() - 1;
        future[last] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&mut future),
            Err(SrtpError::AuthenticationFailed)
        );
        assert!(rx.unprotect_rtp(&mut first).is_ok());
        assert!(rx.unprotect_rtp(&mut second).is_ok(), "{suite}");

        // the same for SRTCP
        let mut good = rtcp(3, 1);
        tx.protect_rtcp(&mut good).unwrap();
        let mut bad = good.clone();
        bad[9] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&mut bad),
            Err(SrtpError::AuthenticationFailed)
        );
        assert!(rx.unprotect_rtcp(&mut good.clone()).is_ok());
        assert_eq!(rx.unprotect_rtcp(&mut good), Err(SrtpError::Replayed));
    }
}

#[test]
fn srtcp_replay_window() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let sent: Vec<Vec<u8>> = (0..80)
            .map(|i| {
                let mut p = rtcp(5, i);
                tx.protect_rtcp(&mut p).unwrap();
                p
            })
            .collect();
        assert!(rx.unprotect_rtcp(&mut sent[79].clone()).is_ok());
        assert!(rx.unprotect_rtcp(&mut sent[20].clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtcp(&mut sent[20].clone()),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            rx.unprotect_rtcp(&mut sent[15].clone()),
            Err(SrtpError::TooOld)
        );
        // the index is in the packet: E bit set, index 79
        let p = &sent[79];
        let at = if suite == SrtpSuite::AeadAes128Gcm {
            p.len() - 4
        } else {
            p.len() - 14
        };
        assert_eq!(p[at..at + 4], [0x80, 0, 0, 79]);
    }
}

// ---- rollover counter ----

fn send(
    tx: &mut SrtpContext,
    seqs: impl IntoIterator<Item = u16>,
    ssrc: u32,
) -> Vec<(u16, Vec<u8>)> {
    seqs.into_iter()
        .map(|seq| {
            let mut p = rtp(seq, ssrc);
            tx.protect_rtp(&mut p).unwrap();
            (seq, p)
        })
        .collect()
}

#[test]
fn roc_advances_at_the_sequence_wrap() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let sent = send(&mut tx, (65530..=65535).chain(0..=10), 9);
        assert_eq!(tx.roc(9), Some(1));
        for (seq, mut p) in sent {
            let len = rx
                .unprotect_rtp(&mut p)
                .unwrap_or_else(|e| panic!("{suite} {seq}: {e}"));
            assert_eq!(p[..len], rtp(seq, 9)[..]);
        }
        assert_eq!(rx.roc(9), Some(1), "{suite}");
    }
}

#[test]
fn roc_with_a_loss_and_reordering_across_the_wrap() {
    for suite in SUITES {
        // 65535 and 0 lost
        let (mut tx, mut rx) = pair(suite);
        let sent = send(&mut tx, (65530..=65535).chain(0..=10), 9);
        for (seq, mut p) in sent {
            if seq == 65535 || seq == 0 {
                continue;
            }
            assert!(rx.unprotect_rtp(&mut p).is_ok(), "{suite} {seq}");
        }
        assert_eq!(rx.roc(9), Some(1));

        // reordered across the wrap: 65533, 1, 65535, 0, 65534, 2, 3
        let (mut tx, mut rx) = pair(suite);
        let sent = send(&mut tx, (65530..=65535).chain(0..=3), 9);
        let by_seq = |s: u16| sent.iter().find(|(q, _)| *q == s).unwrap().1.clone();
        for seq in [65530, 65531, 65532, 65533, 1, 65535, 0, 65534, 2, 3] {
            let mut p = by_seq(seq);
            let len = rx
                .unprotect_rtp(&mut p)
                .unwrap_or_else(|e| panic!("{suite} {seq}: {e}"));
            assert_eq!(p[..len], rtp(seq, 9)[..]);
        }
        assert_eq!(rx.roc(9), Some(1));
        assert_eq!(
            rx.unprotect_rtp(&mut by_seq(65535)),
            Err(SrtpError::Replayed)
        );
    }
}

#[test]
fn the_sender_keeps_the_index_of_a_late_packet() {
    // sending 65535 after 2 (a late packet) keeps ROC 0 for it and ROC 1 after
    let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
    let sent = send(&mut tx, [65534, 0, 1, 2, 65535, 3], 4);
    assert_eq!(tx.roc(4), Some(1));
    for (seq, mut p) in sent {
        assert!(rx.unprotect_rtp(&mut p).is_ok(), "{seq}");
    }
}

#[test]
fn estimate_index_follows_appendix_a() {
    assert_eq!(estimate_index(65535, 0), Some(65536));
    assert_eq!(estimate_index(65536, 65535), Some(65535));
    assert_eq!(estimate_index(5, 65535), None);
    // more than half the sequence space ahead of the first roll: a packet of
    // the roll before, which does not exist
    assert_eq!(estimate_index(100, 40000), None);
    assert_eq!(estimate_index(100, 30000), Some(30000));
    assert_eq!(estimate_index(3 << 16 | 40000, 100), Some(4 << 16 | 100));
    assert_eq!(estimate_index(3 << 16 | 100, 40000), Some(2 << 16 | 40000));
    assert_eq!(estimate_index(MAX_RTP_INDEX, 0), None);
}

#[test]
fn ssrcs_are_bounded() {
    let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
    for ssrc in 0..=MAX_SSRCS as u32 {
        for (_, mut p) in send(&mut tx, [1, 2], ssrc) {
            rx.unprotect_rtp(&mut p).unwrap();
        }
    }
    assert_eq!(rx.ssrcs.entries.len(), MAX_SSRCS);
    assert_eq!(rx.roc(0), None, "the oldest is forgotten");
    assert_eq!(rx.roc(MAX_SSRCS as u32), Some(0));
    assert_eq!(tx.ssrcs.entries.capacity(), MAX_SSRCS);
}

// ---- session ----

fn session_pair(suite: SrtpSuite) -> (SrtpSession, SrtpSession, SrtpKey, SrtpKey) {
    let a = key(suite, 1);
    let b = key(suite, 2);
    (SrtpSession::new(&a, &b), SrtpSession::new(&b, &a), a, b)
}

#[test]
fn update_with_the_same_keys_keeps_the_state() {
    for suite in SUITES {
        let (mut alice, mut bob, a, b) = session_pair(suite);
        assert_eq!(alice.suite(), suite);
        let mut before = Vec::new();
        for seq in (65530..=65535).chain(0..=5) {
            let mut p = rtp(seq, 1);
            alice.protect_rtp(&mut p).unwrap();
            before.push(p.clone());
            bob.unprotect_rtp(&mut p).unwrap();
        }
        // an address move: the same keys negotiated again
        alice.update(&a, &b);
        bob.update(&b, &a);
        assert_eq!(alice.tx_roc(1), Some(1));
        assert_eq!(bob.rx_roc(1), Some(1));
        for seq in 6..=20 {
            let mut p = rtp(seq, 1);
            alice.protect_rtp(&mut p).unwrap();
            let len = bob.unprotect_rtp(&mut p).unwrap();
            assert_eq!(p[..len], rtp(seq, 1)[..]);
        }
        // the replay window went on too
        assert_eq!(
            bob.unprotect_rtp(&mut before[11].clone()),
            Err(SrtpError::Replayed)
        );
        assert_eq!(bob.stats().rtp_unprotected, 27);
        assert_eq!(bob.stats().replayed, 1);
        assert_eq!(alice.stats().rtp_protected, 27);
    }
}

#[test]
fn a_new_rx_key_falls_back_to_the_old_until_the_new_one_works() {
    for suite in SUITES {
        let (mut alice, mut bob, a, b) = session_pair(suite);
        let mut old_key_packets = Vec::new();
        for seq in 1..=4 {
            let mut p = rtp(seq, 1);
            alice.protect_rtp(&mut p).unwrap();
            old_key_packets.push(p);
        }
        let mut p = old_key_packets[0].clone();
        bob.unprotect_rtp(&mut p).unwrap();

        // alice re-keys: a new offer with a new key
        let a2 = key(suite, 3);
        alice.update(&a2, &b);
        bob.update(&b, &a2);

        // an old-key packet still in flight
        let mut p = old_key_packets[1].clone();
        let len = bob.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p[..len], rtp(2, 1)[..]);
        assert_eq!(bob.stats().old_key_packets, 1);

        // the first packet under the new key
        let mut p = rtp(5, 1);
        alice.protect_rtp(&mut p).unwrap();
        let len = bob.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p[..len], rtp(5, 1)[..]);

        // from now on the old key is refused
        let mut p = old_key_packets[2].clone();
        assert_eq!(
            bob.unprotect_rtp(&mut p),
            Err(SrtpError::AuthenticationFailed)
        );
        assert_eq!(p, old_key_packets[2], "the bytes are unchanged");
        assert_eq!(bob.stats().auth_failures, 1);

        // and the new one goes on
        let mut p = rtp(6, 1);
        alice.protect_rtp(&mut p).unwrap();
        assert!(bob.unprotect_rtp(&mut p).is_ok());

        // alice's tx key changed, so her tx context is fresh; bob's, unchanged, is not
        let mut p = rtcp(2, 0);
        bob.protect_rtcp(&mut p).unwrap();
        assert!(alice.unprotect_rtcp(&mut p).is_ok());
        assert_eq!(alice.stats().rtcp_unprotected, 1);
        assert_ne!(a, a2, "the re-key is a new key");
    }
}

#[test]
fn srtcp_under_the_old_key_falls_back_too() {
    let suite = SrtpSuite::AeadAes128Gcm;
    let (mut alice, mut bob, _a, b) = session_pair(suite);
    let mut old = rtcp(1, 9);
    alice.protect_rtcp(&mut old).unwrap();
    let a2 = key(suite, 4);
    alice.update(&a2, &b);
    bob.update(&b, &a2);
    let len = bob.unprotect_rtcp(&mut old).unwrap();
    assert_eq!(old[..len], rtcp(1, 9)[..]);
    assert_eq!(bob.stats().old_key_packets, 1);
}

proptest! {
    #[test]
    fn unprotect_of_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        first in any::<u8>(),
    ) {
        for suite in SUITES {
            let (_, mut rx) = pair(suite);
            let mut p = bytes.clone();
            if let Some(b) = p.first_mut() {
                *b = (first & 0x3f) | 0x80; // version 2 most of the time, any flags
            }
            let _ = rx.unprotect_rtp(&mut p.clone());
            let _ = rx.unprotect_rtcp(&mut p.clone());
            let _ = rx.unprotect_rtp(&mut bytes.clone());
            let _ = rx.unprotect_rtcp(&mut bytes.clone());
            let mut session = SrtpSession::new(&key(suite, 1), &key(suite, 2));
            let _ = session.unprotect_rtp(&mut p.clone());
            let _ = session.protect_rtp(&mut p.clone());
            let _ = session.protect_rtcp(&mut p);
        }
    }

    #[test]
    fn a_changed_byte_is_refused(position in any::<prop::sample::Index>(), flip in 1u8..=255) {
        for suite in SUITES {
            let (mut tx, mut rx) = pair(suite);
            let mut p = rtp(7, 7);
            tx.protect_rtp(&mut p).unwrap();
            let i = position.index(p.len());
            p[i] ^= flip;
            prop_assert!(rx.unprotect_rtp(&mut p).is_err());
        }
    }
}

#[test]
fn index_space_exhaustion_needs_a_new_key() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        // SRTCP: index 2^31 - 1 is the last one
        tx.rtcp_index = MAX_RTCP_INDEX;
        let mut p = rtcp(1, 1);
        tx.protect_rtcp(&mut p).unwrap();
        assert!(rx.unprotect_rtcp(&mut p).is_ok());
        assert_eq!(
            tx.protect_rtcp(&mut rtcp(1, 2)),
            Err(SrtpError::KeyExhausted)
        );

        // SRTP: after index 2^48 - 1 the next roll has no index
        tx.ssrcs
            .update(1, |s| s.rtp = Some(ReplayWindow::new(MAX_RTP_INDEX)));
        assert_eq!(tx.roc(1), Some(u32::MAX));
        assert_eq!(tx.protect_rtp(&mut rtp(0, 1)), Err(SrtpError::KeyExhausted));
        let mut p = rtp(65000, 1);
        tx.protect_rtp(&mut p).unwrap();
        rx.ssrcs
            .update(1, |s| s.rtp = Some(ReplayWindow::new(MAX_RTP_INDEX - 1000)));
        let len = rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(
            p[..len],
            rtp(65000, 1)[..],
            "{suite}: ROC 2^32 - 1 in the tag and IV"
        );
    }
}
