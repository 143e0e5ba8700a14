//! CRC-32 arithmetic: the CRC of any stretch of a stream from the CRCs of its prefixes.
//!
//! For the standard CRC-32, `crc(A ++ B) = crc(A) * x^(8 |B|) + crc(B)` in `GF(2)[x]`
//! modulo its polynomial (zlib's `crc32_combine`), so `crc(B) = crc(A ++ B) +
//! shift(crc(A), |B|)`: two prefix CRCs and a multiplication give the CRC of the stretch
//! between them, whatever its length.

/// The CRC-32 polynomial, reflected: bit 31 stands for x^0, bit 0 for x^31.
const POLY: u32 = 0xEDB8_8320;

/// `a * b` modulo the polynomial, in the reflected representation of the CRC.
pub(super) const fn mul(a: u32, b: u32) -> u32 {
    let (mut product, mut b) = (0, b);
    let mut bit = 0;
    while bit < 32 {
        if a & (0x8000_0000 >> bit) != 0 {
            product ^= b;
        }
        // b * x: a shift towards x^31, reduced.
        b = (b >> 1) ^ (POLY & (b & 1).wrapping_neg());
        bit += 1;
    }
    product
}

/// `POWERS[k][d]` is `x^(8 d 256^k)`: `d 256^k` zero bytes fed to the CRC.
static POWERS: [[u32; 256]; 4] = powers();

const fn powers() -> [[u32; 256]; 4] {
    let mut table = [[0; 256]; 4];
    // x^8, one byte; then x^(8 * 256^k).
    let mut step = 0x0080_0000;
    let mut k = 0;
    while k < 4 {
        let mut power = 0x8000_0000; // x^0
        let mut d = 0;
        while d < 256 {
            table[k][d] = power;
            power = mul(power, step);
            d += 1;
        }
        step = power;
        k += 1;
    }
    table
}

/// `crc * x^(8 bytes)`: the CRC of a stream after `bytes` more bytes, minus their
/// own CRC. At most four multiplications (`bytes` below 2^32).
pub(super) fn shift(crc: u32, bytes: u64) -> u32 {
    let mut out = crc;
    for (k, table) in POWERS.iter().enumerate() {
        let digit = (bytes >> (8 * k)) & 0xFF;
        if digit != 0 {
            out = mul(table[digit as usize], out);
        }
    }
    debug_assert!(bytes >> 32 == 0, "stretches are shorter than 4 GiB");
    out
}
