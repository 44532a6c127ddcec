//! SDES (RFC 4568) in the SDP offer/answer of `siproam_core::sdp`: every
//! policy pair between two sessions, a baresip-style offer, bad and hostile
//! `a=crypto` lines, re-offers and re-keying.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use siproam_core::sdp::{
    MediaConfig, Negotiated, SdesKeys, SdesSuite, SdpError, SdpSession, SrtpPolicy,
    SDES_KEY_MATERIAL_LEN,
};

const A_ADDR: &str = "192.0.2.10:40000";
const B_ADDR: &str = "198.51.100.20:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Distinct key material per seed (and per suite within it).
fn material(seed: u8) -> [u8; SDES_KEY_MATERIAL_LEN] {
    let mut m = [0u8; SDES_KEY_MATERIAL_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    m
}

/// Our key for `suite` within `material(seed)`.
fn key_of(seed: u8, suite: SdesSuite) -> Vec<u8> {
    let m = material(seed);
    match suite {
        SdesSuite::AesCm128HmacSha1_80 => m[0..30].to_vec(),
        SdesSuite::AesCm128HmacSha1_32 => m[30..60].to_vec(),
        SdesSuite::AeadAes128Gcm => m[60..88].to_vec(),
    }
}

fn config(policy: SrtpPolicy) -> MediaConfig {
    MediaConfig {
        srtp: policy,
        ..MediaConfig::default()
    }
}

fn session(id: u64, local: &str, policy: SrtpPolicy, seed: u8) -> SdpSession {
    let mut s = SdpSession::new(id, addr(local), config(policy));
    s.set_key_material(material(seed));
    s
}

fn text(sdp: &[u8]) -> &str {
    std::str::from_utf8(sdp).unwrap()
}

fn lines(sdp: &[u8]) -> Vec<&str> {
    text(sdp).split("\r\n").filter(|l| !l.is_empty()).collect()
}

fn m_line(sdp: &[u8]) -> &str {
    lines(sdp)
        .into_iter()
        .find(|l| l.starts_with("m=audio"))
        .unwrap()
}

/// The `a=crypto` lines as (tag, suite name, decoded key).
fn cryptos(sdp: &[u8]) -> Vec<(u32, String, Vec<u8>)> {
    lines(sdp)
        .into_iter()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| {
            let parts: Vec<&str> = v.split(' ').collect();
            assert_eq!(parts.len(), 3, "{v}");
            let key = parts[2].strip_prefix("inline:").unwrap();
            (
                parts[0].parse().unwrap(),
                parts[1].to_owned(),
                STANDARD.decode(key).unwrap(),
            )
        })
        .collect()
}

/// An offer from somebody else: one audio stream with `extra` lines.
fn foreign_offer(proto: &str, extra: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
         m=audio 10000 {proto} 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n{extra}"
    )
    .into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A `a=crypto` line with `n` bytes of key `fill`.
fn crypto_line(tag: u32, suite: &str, fill: u8, n: usize, rest: &str) -> String {
    format!(
        "a=crypto:{tag} {suite} inline:{}{rest}\r\n",
        b64(&vec![fill; n])
    )
}

/// One exchange: `a` offers, `b` answers, `a` reads the answer.
fn exchange(
    a: &mut SdpSession,
    b: &mut SdpSession,
) -> Result<(Negotiated, Negotiated, Bytes, Bytes), SdpError> {
    let offer = a.create_offer();
    let (answer, nb) = b.answer(&offer)?;
    let na = a.handle_answer(&answer)?;
    Ok((na, nb, offer, answer))
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Encrypted(&'static str),
    Plain,
    Refused,
}

#[test]
fn every_policy_pair() {
    use Outcome::*;
    use SrtpPolicy::*;
    let cases = [
        (Off, Off, Plain),
        (Off, Optional, Plain),
        (Off, Mandatory, Refused),
        (Optional, Off, Plain),
        (Optional, Optional, Encrypted("RTP/AVP")),
        (Optional, Mandatory, Encrypted("RTP/AVP")),
        (Mandatory, Off, Refused),
        (Mandatory, Optional, Encrypted("RTP/SAVP")),
        (Mandatory, Mandatory, Encrypted("RTP/SAVP")),
    ];
    for (pa, pb, expected) in cases {
        let mut a = session(1000, A_ADDR, pa, 1);
        let mut b = session(2000, B_ADDR, pb, 2);
        let offer = a.create_offer();
        // The offer's shape follows the offerer's policy.
        let offered = cryptos(&offer);
        match pa {
            Off => {
                assert!(m_line(&offer).contains(" RTP/AVP "), "{pa:?}");
                assert!(offered.is_empty());
            }
            Optional | Mandatory => {
                let proto = if pa == Optional {
                    "RTP/AVP"
                } else {
                    "RTP/SAVP"
                };
                assert!(m_line(&offer).contains(&format!(" {proto} ")), "{pa:?}");
                let expected: Vec<(u32, String, Vec<u8>)> = SdesSuite::ALL
                    .into_iter()
                    .zip(1..)
                    .map(|(s, tag)| (tag, s.name().to_owned(), key_of(1, s)))
                    .collect();
                assert_eq!(offered, expected, "{pa:?}");
            }
        }
        let outcome = match b.answer(&offer) {
            Err(e) => {
                assert_eq!(e.status_code(), 488, "{pa:?}/{pb:?}: {e}");
                Refused
            }
            Ok((answer, nb)) => {
                let na = a.handle_answer(&answer).unwrap();
                assert_eq!(na.srtp.is_some(), nb.srtp.is_some(), "{pa:?}/{pb:?}");
                let answered = cryptos(&answer);
                match (na.srtp, nb.srtp) {
                    (Some(ka), Some(kb)) => {
                        // The keys cross: what A sends with, B receives with.
                        assert_eq!(ka.suite, SdesSuite::AesCm128HmacSha1_80);
                        assert_eq!(kb.suite, SdesSuite::AesCm128HmacSha1_80);
                        assert_eq!(ka.local, kb.remote);
                        assert_eq!(ka.remote, kb.local);
                        assert_eq!(ka.local, key_of(1, ka.suite));
                        assert_eq!(kb.local, key_of(2, kb.suite));
                        assert_ne!(ka.local, ka.remote);
                        // One line in the answer: the offer's tag, B's key.
                        assert_eq!(
                            answered,
                            vec![(1, "AES_CM_128_HMAC_SHA1_80".to_owned(), kb.local.clone())]
                        );
                        let proto = if m_line(&answer).contains(" RTP/SAVP ") {
                            "RTP/SAVP"
                        } else {
                            "RTP/AVP"
                        };
                        assert!(m_line(&offer).contains(proto), "same profile as offered");
                        Encrypted(proto)
                    }
                    _ => {
                        assert!(answered.is_empty(), "{pa:?}/{pb:?}");
                        assert!(m_line(&answer).contains(" RTP/AVP "));
                        Plain
                    }
                }
            }
        };
        assert_eq!(outcome, expected, "offerer {pa:?}, answerer {pb:?}");
    }
}

#[test]
fn refusals_name_their_reason() {
    // A mandatory answerer and a plain offer: no a=crypto at all.
    let mut a = session(1, A_ADDR, SrtpPolicy::Off, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let offer = a.create_offer();
    assert_eq!(b.check_offer(&offer), Err(SdpError::MissingCrypto));
    let e = b.answer(&offer).unwrap_err();
    assert_eq!(e, SdpError::MissingCrypto);
    assert_eq!(e.status_code(), 488);
    assert_eq!(e.warning(), (302, "Incompatible transport protocol"));
    assert!(b.negotiated().is_none());

    // SRTP off and an RTP/SAVP offer: no audio stream we speak.
    let mut a = session(1, A_ADDR, SrtpPolicy::Mandatory, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Off, 2);
    let e = b.answer(&a.create_offer()).unwrap_err();
    assert_eq!(e, SdpError::NoAudio);
    assert_eq!(e.status_code(), 488);
}

/// What baresip 1.0 with `mediaenc=srtp-mand` offers, written by hand:
/// RTP/SAVP, one a=crypto per suite, base64 with padding (libre's
/// base64_encode), no lifetime or MKI.
fn baresip_offer() -> Vec<u8> {
    format!(
        "v=0\r\n\
         o=- 1226085312 3271356411 IN IP4 192.168.1.20\r\n\
         s=-\r\n\
         c=IN IP4 192.168.1.20\r\n\
         t=0 0\r\n\
         m=audio 10000 RTP/SAVP 0 8 101\r\n\
         b=AS:80\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n\
         a=sendrecv\r\n\
         a=label:1\r\n\
         a=rtcp-rsize\r\n\
         a=ssrc:1487426034 cname:sip:alice@example.com\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n\
         a=ptime:20\r\n",
        b64(&[0x11; 30]),
        b64(&[0x22; 30])
    )
    .into_bytes()
}

#[test]
fn answers_a_baresip_offer() {
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
        let mut b = session(2, B_ADDR, policy, 2);
        let (answer, nb) = b.answer(&baresip_offer()).unwrap();
        assert_eq!(m_line(&answer), "m=audio 50000 RTP/SAVP 0 101");
        assert_eq!(
            cryptos(&answer),
            vec![(
                1,
                "AES_CM_128_HMAC_SHA1_80".to_owned(),
                key_of(2, SdesSuite::AesCm128HmacSha1_80)
            )]
        );
        assert_eq!(
            nb.srtp,
            Some(SdesKeys {
                suite: SdesSuite::AesCm128HmacSha1_80,
                local: key_of(2, SdesSuite::AesCm128HmacSha1_80),
                remote: vec![0x11; 30],
            })
        );
        assert_eq!(nb.remote, Some(addr("192.168.1.20:10000")));
    }

    // Our preference decides among the usable lines: 32-bit tag first.
    let mut b = SdpSession::new(
        2,
        addr(B_ADDR),
        MediaConfig {
            srtp: SrtpPolicy::Optional,
            srtp_suites: vec![
                SdesSuite::AesCm128HmacSha1_32,
                SdesSuite::AesCm128HmacSha1_80,
            ],
            ..MediaConfig::default()
        },
    );
    b.set_key_material(material(2));
    let (answer, nb) = b.answer(&baresip_offer()).unwrap();
    assert_eq!(
        cryptos(&answer),
        vec![(
            2,
            "AES_CM_128_HMAC_SHA1_32".to_owned(),
            key_of(2, SdesSuite::AesCm128HmacSha1_32)
        )]
    );
    let keys = nb.srtp.unwrap();
    assert_eq!(
        (keys.suite, keys.remote),
        (SdesSuite::AesCm128HmacSha1_32, vec![0x22; 30])
    );

    // A GCM-only answerer finds nothing usable in it: 488 with a Warning.
    let mut b = SdpSession::new(
        2,
        addr(B_ADDR),
        MediaConfig {
            srtp: SrtpPolicy::Optional,
            srtp_suites: vec![SdesSuite::AeadAes128Gcm],
            ..MediaConfig::default()
        },
    );
    b.set_key_material(material(2));
    let e = b.answer(&baresip_offer()).unwrap_err();
    assert_eq!((e.status_code(), e.warning().0), (488, 306));
}

#[test]
fn a_gcm_offer_is_answered_with_gcm() {
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let offer = foreign_offer(
        "RTP/SAVP",
        &crypto_line(5, "AEAD_AES_128_GCM", 0x33, 28, ""),
    );
    let (answer, nb) = b.answer(&offer).unwrap();
    assert_eq!(
        cryptos(&answer),
        vec![(
            5,
            "AEAD_AES_128_GCM".to_owned(),
            key_of(2, SdesSuite::AeadAes128Gcm)
        )]
    );
    let keys = nb.srtp.unwrap();
    assert_eq!(keys.remote, vec![0x33; 28]);
    assert_eq!(keys.local.len(), 28);
}

#[test]
fn unusable_crypto_lines() {
    let cases: Vec<(&str, String)> =
        vec![
        (
            "bad base64",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@@not*base64@@@@@@@@@@@@@@@@@@@@@@\r\n"
                .into(),
        ),
        (
            "key too short",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 29, ""),
        ),
        (
            "key too long",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 31, ""),
        ),
        (
            "GCM length for an AES-CM suite",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 28, ""),
        ),
        (
            "unknown suites only",
            crypto_line(1, "AES_256_CM_HMAC_SHA1_80", 1, 46, "")
                + &crypto_line(2, "F8_128_HMAC_SHA1_80", 1, 30, "")
                + &crypto_line(3, "AEAD_AES_256_GCM", 1, 44, ""),
        ),
        (
            "MKI",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, "|2^20|1:4"),
        ),
        (
            "UNENCRYPTED_SRTP",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, " UNENCRYPTED_SRTP"),
        ),
        (
            "KDR=24",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, " KDR=24"),
        ),
        (
            "FEC_ORDER",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, " FEC_ORDER=FEC_SRTP"),
        ),
        (
            "extremely long line",
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, &" WSH=64".repeat(20_000)),
        ),
    ];
    for (what, extra) in cases {
        // RTP/SAVP: refused with 488 and a Warning.
        let savp = foreign_offer("RTP/SAVP", &extra);
        for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
            let mut b = session(2, B_ADDR, policy, 2);
            assert_eq!(
                b.check_offer(&savp),
                Err(SdpError::UnusableCrypto),
                "{what}"
            );
            let e = b.answer(&savp).unwrap_err();
            assert_eq!(e, SdpError::UnusableCrypto, "{what}");
            assert_eq!(e.status_code(), 488);
            assert_eq!(e.warning(), (306, "Attribute not understood"));
        }
        // RTP/AVP: optional falls back to plain, mandatory refuses.
        let avp = foreign_offer("RTP/AVP", &extra);
        let mut b = session(2, B_ADDR, SrtpPolicy::Optional, 2);
        let (answer, nb) = b.answer(&avp).unwrap();
        assert_eq!(nb.srtp, None, "{what}");
        assert!(cryptos(&answer).is_empty());
        assert!(m_line(&answer).contains(" RTP/AVP "));
        let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
        assert_eq!(
            b.answer(&avp).unwrap_err(),
            SdpError::UnusableCrypto,
            "{what}"
        );
    }

    // RTP/SAVP without any a=crypto.
    let mut b = session(2, B_ADDR, SrtpPolicy::Optional, 2);
    let e = b.answer(&foreign_offer("RTP/SAVP", "")).unwrap_err();
    assert_eq!(e.warning().0, 302);
    assert_eq!(e, SdpError::MissingCrypto);
}

#[test]
fn usable_lines_among_unusable_ones() {
    // A lifetime is accepted; the unusable lines before it are skipped.
    let extra = crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 1, 30, "|2^20|1:4")
        + &crypto_line(2, "AES_192_CM_HMAC_SHA1_80", 1, 38, "")
        + &crypto_line(3, "AES_CM_128_HMAC_SHA1_80", 0x44, 30, "|2^31")
        + &crypto_line(
            4,
            "AES_CM_128_HMAC_SHA1_32",
            0x55,
            30,
            "|1048576 KDR=0 WSH=128",
        );
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let (answer, nb) = b.answer(&foreign_offer("RTP/SAVP", &extra)).unwrap();
    assert_eq!(cryptos(&answer)[0].0, 3);
    assert_eq!(nb.srtp.unwrap().remote, vec![0x44; 30]);

    // Base64 without padding (28 bytes of GCM) is read too.
    let unpadded = format!(
        "a=crypto:9 AEAD_AES_128_GCM inline:{}\r\n",
        b64(&[0x66; 28]).trim_end_matches('=')
    );
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let (_, nb) = b.answer(&foreign_offer("RTP/SAVP", &unpadded)).unwrap();
    assert_eq!(nb.srtp.unwrap().remote, vec![0x66; 28]);

    // A peer that offers our own key back gets no SRTP with it.
    let echo = format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        b64(&key_of(2, SdesSuite::AesCm128HmacSha1_80))
    );
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    assert_eq!(
        b.answer(&foreign_offer("RTP/SAVP", &echo)).unwrap_err(),
        SdpError::UnusableCrypto
    );
}

#[test]
fn many_crypto_lines_are_bounded() {
    // Thousands of unusable lines and a usable one at the end: only the
    // first lines are looked at, so the stream has no usable line.
    let mut extra = crypto_line(1, "NO_SUCH_SUITE", 1, 30, "").repeat(5000);
    extra += &crypto_line(7, "AES_CM_128_HMAC_SHA1_80", 0x77, 30, "");
    let offer = foreign_offer("RTP/SAVP", &extra);
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    assert_eq!(b.answer(&offer).unwrap_err(), SdpError::UnusableCrypto);

    // The usable line first among thousands: taken.
    let mut extra = crypto_line(7, "AES_CM_128_HMAC_SHA1_80", 0x77, 30, "");
    extra += &crypto_line(1, "NO_SUCH_SUITE", 1, 30, "").repeat(5000);
    let offer = foreign_offer("RTP/SAVP", &extra);
    let (answer, nb) = b.answer(&offer).unwrap();
    assert_eq!(cryptos(&answer)[0].0, 7);
    assert_eq!(nb.srtp.unwrap().remote, vec![0x77; 30]);
}

#[test]
fn the_answer_to_our_offer() {
    let ours = |policy| {
        let mut a = session(1, A_ADDR, policy, 1);
        let offer = a.create_offer();
        (a, offer)
    };
    let answer = |proto: &str, extra: &str| {
        format!(
            "v=0\r\no=- 9 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
             m=audio 50000 {proto} 0\r\n{extra}"
        )
        .into_bytes()
    };

    // Mandatory: no crypto in the answer fails (the phone ends the call).
    let (mut a, _) = ours(SrtpPolicy::Mandatory);
    let e = a.handle_answer(&answer("RTP/SAVP", "")).unwrap_err();
    assert_eq!(e, SdpError::MissingCrypto);
    assert!(a.negotiated().is_none());
    // ... and a plain RTP/AVP answer too.
    let (mut a, _) = ours(SrtpPolicy::Mandatory);
    assert!(a.handle_answer(&answer("RTP/AVP", "")).is_err());

    // Optional: no crypto in the answer is plain RTP.
    let (mut a, _) = ours(SrtpPolicy::Optional);
    let n = a.handle_answer(&answer("RTP/AVP", "")).unwrap();
    assert_eq!(n.srtp, None);

    // A tag we did not offer, or a suite under the wrong tag: refused
    // (RFC 4568 §5.1.3), whatever the policy.
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
        for line in [
            crypto_line(9, "AES_CM_128_HMAC_SHA1_80", 0x99, 30, ""),
            crypto_line(2, "AES_CM_128_HMAC_SHA1_80", 0x99, 30, ""),
            crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 0x99, 29, ""),
        ] {
            let (mut a, offer) = ours(policy);
            let proto = if policy == SrtpPolicy::Optional {
                "RTP/AVP"
            } else {
                "RTP/SAVP"
            };
            assert!(m_line(&offer).contains(proto));
            let e = a.handle_answer(&answer(proto, &line)).unwrap_err();
            assert_eq!(e, SdpError::UnusableCrypto, "{policy:?} {line}");
        }
    }

    // Our own key echoed back: refused.
    let (mut a, _) = ours(SrtpPolicy::Mandatory);
    let echo = format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        b64(&key_of(1, SdesSuite::AesCm128HmacSha1_80))
    );
    assert_eq!(
        a.handle_answer(&answer("RTP/SAVP", &echo)).unwrap_err(),
        SdpError::UnusableCrypto
    );

    // The 32-bit suite under its tag 2, with a lifetime: taken.
    let (mut a, _) = ours(SrtpPolicy::Mandatory);
    let line = crypto_line(2, "AES_CM_128_HMAC_SHA1_32", 0x99, 30, "|2^31");
    let n = a.handle_answer(&answer("RTP/SAVP", &line)).unwrap();
    assert_eq!(
        n.srtp,
        Some(SdesKeys {
            suite: SdesSuite::AesCm128HmacSha1_32,
            local: key_of(1, SdesSuite::AesCm128HmacSha1_32),
            remote: vec![0x99; 30],
        })
    );
}

#[test]
fn reoffers_keep_keys_and_tag() {
    let mut a = session(1, A_ADDR, SrtpPolicy::Optional, 1);
    let mut b = SdpSession::new(
        2,
        addr(B_ADDR),
        MediaConfig {
            srtp: SrtpPolicy::Optional,
            srtp_suites: vec![SdesSuite::AesCm128HmacSha1_32],
            ..MediaConfig::default()
        },
    );
    b.set_key_material(material(2));
    let (na, nb, first_offer, _) = exchange(&mut a, &mut b).unwrap();
    let ka = na.srtp.clone().unwrap();
    assert_eq!(ka.suite, SdesSuite::AesCm128HmacSha1_32);
    assert_eq!(ka.local, nb.srtp.clone().unwrap().remote);

    // An unchanged re-offer is byte for byte the same... except that the
    // suite in use now comes first, under its tag.
    let reoffer = a.create_offer();
    let offered = cryptos(&reoffer);
    assert_eq!(
        offered,
        vec![
            (
                2,
                "AES_CM_128_HMAC_SHA1_32".to_owned(),
                key_of(1, SdesSuite::AesCm128HmacSha1_32)
            ),
            (
                1,
                "AES_CM_128_HMAC_SHA1_80".to_owned(),
                key_of(1, SdesSuite::AesCm128HmacSha1_80)
            ),
            (
                3,
                "AEAD_AES_128_GCM".to_owned(),
                key_of(1, SdesSuite::AeadAes128Gcm)
            ),
        ]
    );
    assert_ne!(reoffer, first_offer);
    let (answer, nb2) = b.answer(&reoffer).unwrap();
    let na2 = a.handle_answer(&answer).unwrap();
    assert_eq!(na2.srtp, na.srtp, "same keys after a refresh");
    assert_eq!(nb2.srtp, nb.srtp);

    // A network change: new address, same keys, same tag first.
    a.set_local_address(addr("192.0.2.99:41000"));
    let moved = a.create_offer();
    assert!(m_line(&moved).starts_with("m=audio 41000 RTP/AVP"));
    assert_eq!(cryptos(&moved), offered);
    // A second identical re-offer is byte for byte the same.
    let again = a.create_offer();
    assert_eq!(again, moved);
    let (answer, nb3) = b.answer(&moved).unwrap();
    assert_eq!(nb3.remote, Some(addr("192.0.2.99:41000")));
    assert_eq!(nb3.srtp, nb.srtp);
    assert_eq!(a.handle_answer(&answer).unwrap().srtp, na.srtp);

    // set_key_material again does not change the keys.
    a.set_key_material(material(50));
    assert_eq!(cryptos(&a.create_offer()), offered);
    a.cancel_offer();
}

#[test]
fn a_peer_reoffer_keeps_the_suite_in_use() {
    // B answers 80 first (default preference).
    let mut a = session(1, A_ADDR, SrtpPolicy::Mandatory, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let (na, _, _, _) = exchange(&mut a, &mut b).unwrap();
    assert_eq!(na.srtp.unwrap().suite, SdesSuite::AesCm128HmacSha1_80);

    // The peer re-offers GCM first, then 80 under tag 4 with a new key:
    // 80 stays, under the peer's new tag; the new key is the remote one.
    let extra = crypto_line(1, "AEAD_AES_128_GCM", 0x10, 28, "")
        + &crypto_line(4, "AES_CM_128_HMAC_SHA1_80", 0x20, 30, "");
    let (answer, nb) = b.answer(&foreign_offer("RTP/SAVP", &extra)).unwrap();
    assert_eq!(
        cryptos(&answer),
        vec![(
            4,
            "AES_CM_128_HMAC_SHA1_80".to_owned(),
            key_of(2, SdesSuite::AesCm128HmacSha1_80)
        )]
    );
    let keys = nb.srtp.unwrap();
    assert_eq!(keys.suite, SdesSuite::AesCm128HmacSha1_80);
    assert_eq!(keys.local, key_of(2, SdesSuite::AesCm128HmacSha1_80));
    assert_eq!(keys.remote, vec![0x20; 30]);
    // Our next offer puts 80 first under tag 4.
    let offered = cryptos(&b.create_offer());
    assert_eq!(
        offered
            .iter()
            .map(|(t, s, _)| (*t, s.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (4, "AES_CM_128_HMAC_SHA1_80"),
            (1, "AES_CM_128_HMAC_SHA1_32"),
            (2, "AEAD_AES_128_GCM")
        ]
    );
}

#[test]
fn rekeying() {
    let mut a = session(1, A_ADDR, SrtpPolicy::Optional, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Optional, 2);
    let (na, nb, _, _) = exchange(&mut a, &mut b).unwrap();
    let suite = na.srtp.as_ref().unwrap().suite;

    // The peer (B) re-keys and re-offers: A's answer keeps A's key, and
    // A's remote key is B's new one.
    b.rekey(material(3));
    let (nb2, na2, _, _) = exchange(&mut b, &mut a).unwrap();
    let (ka, kb) = (na2.srtp.unwrap(), nb2.srtp.clone().unwrap());
    assert_eq!(
        ka.local,
        na.srtp.as_ref().unwrap().local,
        "A's key unchanged"
    );
    assert_eq!(ka.remote, key_of(3, suite), "B's new key");
    assert_ne!(ka.remote, na.srtp.as_ref().unwrap().remote);
    assert_eq!(
        (kb.local.clone(), kb.remote.clone()),
        (ka.remote.clone(), ka.local.clone())
    );
    assert_ne!(nb2.srtp, nb.srtp, "the driver sees the change");

    // We (A) re-key: the next offer carries the new key under the same tag.
    a.rekey(material(4));
    let offer = a.create_offer();
    let first = &cryptos(&offer)[0];
    assert_eq!((first.0, first.2.clone()), (1, key_of(4, suite)));
    let (answer, nb3) = b.answer(&offer).unwrap();
    let na3 = a.handle_answer(&answer).unwrap();
    assert_eq!(na3.srtp.as_ref().unwrap().local, key_of(4, suite));
    assert_eq!(nb3.srtp.as_ref().unwrap().remote, key_of(4, suite));
    assert_eq!(na3.srtp.unwrap().remote, key_of(3, suite));

    // A rekey while an offer is outstanding does not change that offer's keys.
    let offer = a.create_offer();
    a.rekey(material(5));
    let (answer, _) = b.answer(&offer).unwrap();
    assert_eq!(
        a.handle_answer(&answer).unwrap().srtp.unwrap().local,
        key_of(4, suite)
    );
}

#[test]
fn without_key_material() {
    // Optional without keys offers and answers plain RTP.
    let mut a = SdpSession::new(1, addr(A_ADDR), config(SrtpPolicy::Optional));
    let offer = a.create_offer();
    assert!(m_line(&offer).contains(" RTP/AVP "));
    assert!(cryptos(&offer).is_empty());
    let mut b = SdpSession::new(2, addr(B_ADDR), config(SrtpPolicy::Optional));
    let (answer, n) = b.answer(&baresip_like_avp()).unwrap();
    assert!(cryptos(&answer).is_empty());
    assert_eq!(n.srtp, None);

    // Mandatory without keys refuses offers as a misuse and never offers
    // plain RTP.
    let mut m = SdpSession::new(1, addr(A_ADDR), config(SrtpPolicy::Mandatory));
    let e = m.answer(&baresip_offer()).unwrap_err();
    assert_eq!(e.status_code(), 500);
    assert_eq!(e, SdpError::NoKeyMaterial);
    let offer = m.create_offer();
    assert!(m_line(&offer).contains(" RTP/SAVP "));
    assert!(cryptos(&offer).is_empty());
}

/// An optional-SRTP offer from a baresip with `mediaenc=srtp`: RTP/AVP and
/// one a=crypto line.
fn baresip_like_avp() -> Vec<u8> {
    foreign_offer(
        "RTP/AVP",
        &crypto_line(1, "AES_CM_128_HMAC_SHA1_80", 0x11, 30, ""),
    )
}

#[test]
fn debug_output_hides_keys() {
    let mut a = session(1, A_ADDR, SrtpPolicy::Optional, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Optional, 2);
    let (na, _, offer, _) = exchange(&mut a, &mut b).unwrap();
    let key_b64 = b64(&key_of(1, SdesSuite::AesCm128HmacSha1_80));
    assert!(text(&offer).contains(&key_b64));
    let shown = format!("{a:?} {na:?} {b:?}");
    assert!(!shown.contains(&key_b64), "{shown}");
    let bytes = format!("{:?}", key_of(1, SdesSuite::AesCm128HmacSha1_80));
    assert!(!shown.contains(&bytes[1..20]), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary a=crypto values in offers and answers never panic, and an
    /// accepted one always yields a key of the suite's length.
    #[test]
    fn arbitrary_crypto_lines_never_panic(
        values in proptest::collection::vec(
            prop_oneof![
                "[ -~]{0,120}",
                "[0-9]{1,10} (AES_CM_128_HMAC_SHA1_80|AES_CM_128_HMAC_SHA1_32|AEAD_AES_128_GCM|[A-Z_0-9]{1,30}) inline:[A-Za-z0-9+/=]{0,50}(\\|[0-9^:|]{0,12})?( [A-Z_]{1,12}=?[0-9]{0,4}){0,3}",
            ],
            0..6,
        ),
        savp in any::<bool>(),
        mandatory in any::<bool>(),
    ) {
        let extra: String = values
            .iter()
            .map(|v| format!("a=crypto:{v}\r\n"))
            .collect();
        let proto = if savp { "RTP/SAVP" } else { "RTP/AVP" };
        let policy = if mandatory { SrtpPolicy::Mandatory } else { SrtpPolicy::Optional };
        let offer = foreign_offer(proto, &extra);
        let mut b = session(2, B_ADDR, policy, 2);
        let checked = b.check_offer(&offer);
        match b.answer(&offer) {
            Ok((answer, n)) => {
                prop_assert!(checked.is_ok());
                if let Some(keys) = n.srtp {
                    prop_assert_eq!(keys.remote.len(), keys.suite.key_material_len());
                    prop_assert_eq!(cryptos(&answer).len(), 1);
                } else {
                    prop_assert!(!savp && !mandatory);
                }
            }
            Err(e) => {
                prop_assert_eq!(e.status_code(), 488);
                prop_assert_eq!(Err(e), checked);
            }
        }

        // The same lines as the answer to our offer.
        let mut a = session(1, A_ADDR, policy, 1);
        let _ = a.create_offer();
        let answer = format!(
            "v=0\r\no=- 9 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
             m=audio 50000 {proto} 0\r\n{extra}"
        );
        if let Ok(n) = a.handle_answer(answer.as_bytes()) {
            if let Some(keys) = n.srtp {
                prop_assert_eq!(keys.remote.len(), keys.suite.key_material_len());
            }
        }
    }
}

#[test]
fn a_peer_reoffer_without_crypto() {
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
        let mut a = session(1, A_ADDR, SrtpPolicy::Optional, 1);
        let mut b = session(2, B_ADDR, policy, 2);
        let (_, nb, _, _) = exchange(&mut a, &mut b).unwrap();
        assert!(nb.srtp.is_some());
        let plain = foreign_offer("RTP/AVP", "");
        match policy {
            // Optional: the stream goes on in plain RTP.
            SrtpPolicy::Optional => {
                let (answer, n) = b.answer(&plain).unwrap();
                assert_eq!(n.srtp, None);
                assert!(cryptos(&answer).is_empty());
                // and our next offer is RTP/AVP with crypto again, tags from 1.
                let offer = b.create_offer();
                assert!(m_line(&offer).contains(" RTP/AVP "));
                assert_eq!(cryptos(&offer)[0].0, 1);
            }
            // Mandatory: refused, and the SRTP session stays as it was.
            _ => {
                assert_eq!(b.answer(&plain).unwrap_err(), SdpError::MissingCrypto);
                assert_eq!(b.negotiated().unwrap().srtp, nb.srtp);
            }
        }
    }
}

#[test]
fn a_peer_reoffer_with_the_same_key_changes_nothing() {
    let mut a = session(1, A_ADDR, SrtpPolicy::Mandatory, 1);
    let mut b = session(2, B_ADDR, SrtpPolicy::Mandatory, 2);
    let (_, nb, _, answer) = exchange(&mut a, &mut b).unwrap();
    let (nb2, na2, _, answer2) = exchange(&mut b, &mut a).unwrap();
    // B's re-offer is answered by A; B's keys are what they were.
    assert_eq!(nb2.srtp, nb.srtp);
    assert_eq!(
        na2.srtp.as_ref().unwrap().remote,
        key_of(2, SdesSuite::AesCm128HmacSha1_80)
    );
    // And A's answer carries A's one key under the tag B offered first.
    assert_eq!(cryptos(&answer2).len(), 1);
    assert_eq!(cryptos(&answer)[0].0, cryptos(&answer2)[0].0);
}
