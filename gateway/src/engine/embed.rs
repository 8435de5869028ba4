//! Deterministic embeddings: the same text always gives the same unit vector.

/// A unit vector of `dims` components derived from `text` alone.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut state = seed_of(text);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            // splitmix64, mapped to (-1, 1)
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The seed of a text's vector: FNV-1a over its UTF-8 bytes, stable across platforms and
/// releases (unlike std's hasher), so an embedding never changes between versions.
fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
