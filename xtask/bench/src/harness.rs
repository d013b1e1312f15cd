//! The measuring harness: wall-clock timing with [`Instant`], rounds that alternate
//! the subjects (rotating who goes first), medians, and the [`Figure`] record with its
//! target.

use std::time::Instant;

/// Runs `f` and returns its result and the elapsed seconds.
#[inline]
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// The median of `v` (the mean of the two middle values for an even count); NaN when
/// empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `rounds` rounds of the `subjects` closures, each round in a rotated order
/// (round r starts with subject r mod n), and returns each subject's samples.
/// A sample is whatever the closure measured, as a vector of values.
pub fn alternate<const N: usize>(
    rounds: usize,
    subjects: &mut [&mut dyn FnMut() -> Result<Vec<f64>, String>; N],
) -> Result<[Vec<Vec<f64>>; N], String> {
    let mut out: [Vec<Vec<f64>>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for k in 0..N {
            let i = (round + k) % N;
            out[i].push((subjects[i])()?);
        }
    }
    Ok(out)
}

/// As [`alternate`], after one warm-up round whose samples are dropped. The first
/// round of a workload runs on cold code, heap and caches, and its first subject
/// (always ours, x86 EPT) pays for that alone: for sub-microsecond figures that one
/// sample was 5-8x the others (`map_1g_1g` spread 400-700 % for ours, not the peer's).
/// The warm-up round runs every subject once, so all of them start warm.
pub fn alternate_warm<const N: usize>(
    rounds: usize,
    subjects: &mut [&mut dyn FnMut() -> Result<Vec<f64>, String>; N],
) -> Result<[Vec<Vec<f64>>; N], String> {
    for subject in subjects.iter_mut() {
        subject()?;
    }
    alternate(rounds, subjects)
}

/// The median of component `j` over `samples`.
pub fn median_of(samples: &[Vec<f64>], j: usize) -> f64 {
    let col: Vec<f64> = samples
        .iter()
        .map(|s| s.get(j).copied().unwrap_or(f64::NAN))
        .collect();
    median(&col)
}

/// The spread of component `j` over `samples`: `(max - min) / median`, in percent
/// (NaN when there is no sample).
pub fn spread_of(samples: &[Vec<f64>], j: usize) -> f64 {
    let col: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.get(j).copied())
        .filter(|x| x.is_finite())
        .collect();
    let lo = col.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mid = median(&col);
    if col.is_empty() || mid == 0.0 {
        return f64::NAN;
    }
    (hi - lo) / mid.abs() * 100.0
}

/// What a figure must satisfy.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// `ours / peer <= x`.
    RatioAtMost(f64),
    /// `ours <= x`.
    OursAtMost(f64),
    /// `ours < x`.
    OursBelow(f64),
    /// `ours == x` (counts).
    OursEquals(f64),
}

impl Target {
    /// Whether `fig` meets the target; `None` when it cannot be decided (no value).
    pub fn met(self, ours: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtMost(x) => ratio.filter(|r| r.is_finite()).map(|r| r <= x),
            Target::OursAtMost(x) => ours.is_finite().then_some(ours <= x),
            Target::OursBelow(x) => ours.is_finite().then_some(ours < x),
            Target::OursEquals(x) => ours.is_finite().then_some(ours == x),
        }
    }

    /// The target as a person reads it.
    pub fn describe(self) -> String {
        match self {
            Target::RatioAtMost(x) => format!("ratio <= {x}"),
            Target::OursAtMost(x) => format!("<= {}", num(x)),
            Target::OursBelow(x) => format!("< {}", num(x)),
            Target::OursEquals(x) => format!("= {}", num(x)),
        }
    }
}

/// One reported figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Name in `summary.json`.
    pub name: String,
    /// Unit of `ours` and `peer`.
    pub unit: &'static str,
    /// Our median.
    pub ours: f64,
    /// The peer's median, when the peer has this figure.
    pub peer: Option<f64>,
    /// The target, when the issue sets one.
    pub target: Option<Target>,
    /// What `peer` is when it is not axaddrspace, or how to read the figure.
    pub note: String,
    /// The spread of our samples and of the peer's (`(max - min) / median`, %), and
    /// the number of runs, when the figure was built from samples.
    pub spread: Option<(f64, f64, usize)>,
}

impl Figure {
    /// A figure with both values.
    pub fn pair(name: impl Into<String>, unit: &'static str, ours: f64, peer: f64) -> Self {
        Figure {
            name: name.into(),
            unit,
            ours,
            peer: Some(peer),
            target: None,
            note: String::new(),
            spread: None,
        }
    }

    /// A figure from per-run samples: the medians of component `oj` of `ours` and
    /// `pj` of `peer`, times `scale`, with their spreads and the run count.
    pub fn sampled(
        name: impl Into<String>,
        unit: &'static str,
        scale: f64,
        (ours, oj): (&[Vec<f64>], usize),
        (peer, pj): (&[Vec<f64>], usize),
    ) -> Self {
        let mut f = Self::pair(
            name,
            unit,
            median_of(ours, oj) * scale,
            median_of(peer, pj) * scale,
        );
        f.spread = Some((spread_of(ours, oj), spread_of(peer, pj), ours.len()));
        f
    }

    /// A figure only we have.
    pub fn solo(name: impl Into<String>, unit: &'static str, ours: f64) -> Self {
        Figure {
            name: name.into(),
            unit,
            ours,
            peer: None,
            target: None,
            note: String::new(),
            spread: None,
        }
    }

    /// With a target.
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    /// With a note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }

    /// `ours / peer`, when both exist and the peer is not zero.
    pub fn ratio(&self) -> Option<f64> {
        let p = self.peer?;
        (p != 0.0 && p.is_finite() && self.ours.is_finite()).then(|| self.ours / p)
    }

    /// Whether the target is met (`None`: no target or undecidable).
    pub fn met(&self) -> Option<bool> {
        self.target.and_then(|t| t.met(self.ours, self.ratio()))
    }
}

/// A number with about four significant digits, no exponent for common ranges.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

/// A cheap deterministic pseudo-random sequence (xorshift64*), the same for every
/// subject.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn alternation_rotates_the_first_subject() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut a = || {
            order.borrow_mut().push('a');
            Ok(vec![1.0])
        };
        let mut b = || {
            order.borrow_mut().push('b');
            Ok(vec![2.0])
        };
        let [sa, sb] = alternate(3, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(order.into_inner(), vec!['a', 'b', 'b', 'a', 'a', 'b']);
        assert_eq!((sa.len(), sb.len()), (3, 3));
        assert_eq!(median_of(&sb, 0), 2.0);
    }

    #[test]
    fn spread_and_sampled_figures() {
        let s = vec![vec![10.0, 1.0], vec![12.0, 1.0], vec![8.0, 1.0]];
        assert_eq!(spread_of(&s, 0), 40.0);
        assert_eq!(spread_of(&s, 1), 0.0);
        let f = Figure::sampled("x", "ns", 2.0, (&s, 0), (&s, 1));
        assert_eq!((f.ours, f.peer), (20.0, Some(2.0)));
        assert_eq!(f.spread, Some((40.0, 0.0, 3)));
    }

    #[test]
    fn targets() {
        let f = Figure::pair("x", "µs", 4.0, 10.0).target(Target::RatioAtMost(0.4));
        assert_eq!(f.met(), Some(true));
        let f = Figure::pair("x", "µs", 5.0, 10.0).target(Target::RatioAtMost(0.4));
        assert_eq!(f.met(), Some(false));
        let f = Figure::pair("x", "frames", 0.0, 0.0).target(Target::OursEquals(0.0));
        assert_eq!(f.ratio(), None);
        assert_eq!(f.met(), Some(true));
    }
}
