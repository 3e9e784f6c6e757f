//! GPU devices: which device holds which share, and where a new request goes.
//!
//! Invariants:
//! - A pool of `total` GPU units has `floor(total)` devices of capacity 1, plus one device
//!   of the fractional rest when there is one. Device ids are their indices.
//! - A request of `n + f` units (`n` whole, `0 <= f < 1`) takes `n` devices nobody uses and
//!   puts its fraction `f` on one device: the fullest device that still has room (best fit),
//!   so fractions pack onto one device before spreading to a fresh one.
//! - On no device do the shares held exceed its capacity (within `EPS`).
//! - On an empty pool every amount up to the total has a place (the whole units fill the
//!   unit devices, the fraction fits the next unit device or the last, smaller one), so
//!   only the total decides whether a GPU request can ever be granted.

use super::ledger::EPS;

/// Every device's capacity and use.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Devices {
    caps: Vec<f64>,
    used: Vec<f64>,
}

impl Devices {
    pub(crate) fn new(total: f64) -> Self {
        let whole = (total + EPS).floor().max(0.0);
        let mut caps = vec![1.0; whole as usize];
        let rest = total - whole;
        if rest > EPS {
            caps.push(rest);
        }
        let used = vec![0.0; caps.len()];
        Devices { caps, used }
    }

    #[cfg(test)]
    pub(crate) fn capacities(&self) -> Vec<f64> {
        self.caps.clone()
    }

    /// Where `amount` units would go now, or `None` if no arrangement has room.
    pub(crate) fn place(&self, amount: f64) -> Option<Vec<(usize, f64)>> {
        let whole = (amount + EPS).floor();
        let mut frac = amount - whole;
        if frac < EPS {
            frac = 0.0;
        }
        let whole = whole as usize;
        let room = |i: usize| self.caps[i] - self.used[i];
        let mut placement = Vec::with_capacity(whole + 1);
        // The fraction first goes to a device already in use, the fullest that has room.
        let mut frac_at = None;
        if frac > 0.0 {
            frac_at = (0..self.caps.len())
                .filter(|&i| self.used[i] > EPS && room(i) + EPS >= frac)
                .min_by(|&a, &b| room(a).total_cmp(&room(b)).then(a.cmp(&b)));
        }
        let free_whole: Vec<usize> =
            (0..self.caps.len()).filter(|&i| self.used[i] <= EPS && self.caps[i] >= 1.0 - EPS).take(whole).collect();
        if free_whole.len() < whole {
            return None;
        }
        placement.extend(free_whole.iter().map(|&i| (i, 1.0)));
        if frac > 0.0 {
            let at = match frac_at {
                Some(i) => i,
                // No device in use has room: the smallest untouched one that does.
                None => (0..self.caps.len())
                    .filter(|i| !free_whole.contains(i) && room(*i) + EPS >= frac)
                    .min_by(|&a, &b| room(a).total_cmp(&room(b)).then(a.cmp(&b)))?,
            };
            placement.push((at, frac));
        }
        Some(placement)
    }

    pub(crate) fn take(&mut self, placement: &[(usize, f64)]) {
        for &(i, share) in placement {
            self.used[i] += share;
        }
    }

    pub(crate) fn free(&mut self, placement: &[(usize, f64)]) {
        for &(i, share) in placement {
            self.used[i] = (self.used[i] - share).max(0.0);
        }
    }

    /// Each device's share in use.
    #[cfg(test)]
    pub(crate) fn used(&self) -> &[f64] {
        &self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_follow_the_total() {
        assert_eq!(Devices::new(2.0).capacities(), vec![1.0, 1.0]);
        assert_eq!(Devices::new(1.5).capacities(), vec![1.0, 0.5]);
        assert!(Devices::new(0.0).capacities().is_empty());
    }

    #[test]
    fn fractions_pack_onto_one_device_before_spreading() {
        let mut d = Devices::new(2.0);
        let a = d.place(0.25).unwrap();
        assert_eq!(a, vec![(0, 0.25)]);
        d.take(&a);
        let b = d.place(0.5).unwrap();
        assert_eq!(b, vec![(0, 0.5)], "the used device has room, so the fraction goes there");
        d.take(&b);
        let c = d.place(0.5).unwrap();
        assert_eq!(c, vec![(1, 0.5)], "device 0 has only 0.25 left");
        d.take(&c);
        let e = d.place(0.25).unwrap();
        assert_eq!(e, vec![(0, 0.25)], "best fit: the fullest device with room");
    }

    #[test]
    fn whole_units_take_untouched_devices() {
        let mut d = Devices::new(3.0);
        d.take(&[(0, 0.5)]);
        assert_eq!(d.place(2.0).unwrap(), vec![(1, 1.0), (2, 1.0)]);
        assert_eq!(d.place(1.5).unwrap(), vec![(1, 1.0), (0, 0.5)]);
        assert_eq!(d.place(3.0), None, "device 0 is partly used");
    }

    #[test]
    fn a_fraction_never_spans_devices() {
        let mut d = Devices::new(2.0);
        d.take(&[(0, 0.5), (1, 0.5)]);
        assert_eq!(d.place(0.75), None, "1.0 is free in all, but on no one device");
        d.free(&[(1, 0.5)]);
        assert_eq!(d.place(0.75).unwrap(), vec![(1, 0.75)]);
        assert_eq!(d.used(), &[0.5, 0.0]);
    }
}
