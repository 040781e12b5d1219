//! G.711 mu-law / A-law sample conversion (ITU-T G.711), hand-written: it is a table,
//! not a parser. Decoding uses 256-entry tables built once at compile time.

const fn ulaw_decode_one(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_one(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_one(i as u8)
        } else {
            ulaw_decode_one(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// Decodes one mu-law byte to linear 16-bit PCM.
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TABLE[u as usize]
}

/// Decodes one A-law byte to linear 16-bit PCM.
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TABLE[a as usize]
}

/// Encodes one linear 16-bit PCM sample to mu-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    if pcm > CLIP {
        pcm = CLIP;
    }
    pcm += BIAS;
    let exponent = (31 - (pcm as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Encodes one linear 16-bit PCM sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm >= 0 {
        0x80
    } else {
        pcm = -pcm - 1;
        0
    };
    if pcm > 32767 {
        pcm = 32767;
    }
    let byte = if pcm < 256 {
        (pcm >> 4) as u8
    } else {
        let exponent = (31 - (pcm as u32).leading_zeros() as i32 - 7).clamp(1, 7);
        let mantissa = (pcm >> (exponent + 3)) & 0x0F;
        ((exponent << 4) | mantissa) as u8
    };
    (byte | sign) ^ 0x55
}

/// Level in dBov of a G.711 payload, straight from the table (no resampling).
pub fn payload_level_dbov(payload: &[u8], alaw: bool) -> f32 {
    let table = if alaw { &ALAW_TABLE } else { &ULAW_TABLE };
    if payload.is_empty() {
        return -127.0;
    }
    let sum: f64 = payload
        .iter()
        .map(|&b| {
            let s = table[b as usize] as f64;
            s * s
        })
        .sum();
    let rms = (sum / payload.len() as f64).sqrt();
    if rms < 1e-3 {
        return -127.0;
    }
    ((20.0 * (rms / 32767.0).log10()) as f32).clamp(-127.0, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mu-law encoder the server's integration tests carried (mcu/tests/common/uac.rs):
    /// this module gives the same byte for every sample, so they can use it instead.
    #[test]
    fn ulaw_encoder_matches_the_mcu_test_copy() {
        fn copy(sample: i16) -> u8 {
            const BIAS: i32 = 0x84;
            let mut s = sample as i32;
            let sign = if s < 0 {
                s = -s;
                0x80
            } else {
                0
            };
            s = (s + BIAS).min(32635 + BIAS);
            let mut exp = 7;
            let mut mask = 0x4000;
            while exp > 0 && s & mask == 0 {
                exp -= 1;
                mask >>= 1;
            }
            let mant = (s >> (exp + 3)) & 0x0F;
            !(sign | (exp << 4) | mant) as u8
        }
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(s), copy(s), "sample {s}");
        }
    }

    #[test]
    fn roundtrip_is_close() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            let tol = (s as i32).abs() / 16 + 16;
            assert!((u - s as i32).abs() <= tol, "ulaw {s} -> {u}");
            assert!((a - s as i32).abs() <= tol, "alaw {s} -> {a}");
        }
    }

    #[test]
    fn codes_are_stable() {
        for b in 0..=255u8 {
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(b)),
                if b == 0x7F { 0xFF } else { b }
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b);
        }
    }
}
