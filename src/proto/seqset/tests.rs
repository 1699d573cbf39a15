use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn model(set: &SeqSet) -> BTreeSet<u64> {
    set.ranges().flat_map(|r| r.start..=r.end).collect()
}

fn build(seqs: &[u64]) -> SeqSet {
    let mut set = SeqSet::new();
    for &s in seqs {
        set.insert(s);
    }
    set
}

#[test]
fn coalesces_adjacent_and_reports_gaps() {
    let set = build(&[1, 2, 3, 5, 9, 4]);
    assert_eq!(set.range_count(), 2);
    assert_eq!(set.contiguous(), 5);
    assert_eq!(set.max(), 9);
    assert_eq!(set.gaps(), vec![SeqRange { start: 6, end: 8 }]);
    assert_eq!(SeqSet::up_to(0), SeqSet::new());
    assert_eq!(build(&[2]).contiguous(), 0);
}

proptest! {
    #[test]
    fn behaves_like_a_set(a in prop::collection::vec(1u64..60, 0..40), b in prop::collection::vec(1u64..60, 0..40)) {
        let (sa, sb) = (build(&a), build(&b));
        let (ma, mb) = (model(&sa), model(&sb));
        prop_assert_eq!(&ma, &a.iter().copied().collect::<BTreeSet<_>>());
        for s in 0..62 {
            prop_assert_eq!(sa.contains(s), ma.contains(&s));
        }
        let diff: BTreeSet<u64> = sa.difference(&sb).iter().flat_map(|r| r.start..=r.end).collect();
        prop_assert_eq!(diff, ma.difference(&mb).copied().collect::<BTreeSet<_>>());
        let mut u = sa.clone();
        u.union_with(&sb);
        prop_assert_eq!(model(&u), ma.union(&mb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(sa.is_subset(&u), true);
        let gaps: BTreeSet<u64> = sa.gaps().iter().flat_map(|r| r.start..=r.end).collect();
        let expect: BTreeSet<u64> = (1..=sa.max()).filter(|s| !ma.contains(s)).collect();
        prop_assert_eq!(gaps, expect);
        // Stored ranges stay disjoint and non-adjacent.
        let ranges: Vec<SeqRange> = sa.ranges().collect();
        for w in ranges.windows(2) {
            prop_assert!(w[0].end + 1 < w[1].start);
        }
    }
}

#[test]
fn handles_the_top_of_the_number_range() {
    let mut set = SeqSet::new();
    set.insert_range(SeqRange {
        start: u64::MAX - 2,
        end: u64::MAX,
    });
    set.insert(u64::MAX - 3);
    assert_eq!(set.range_count(), 1);
    let other = build(&[u64::MAX - 1]);
    assert_eq!(
        set.difference(&other),
        vec![
            SeqRange {
                start: u64::MAX - 3,
                end: u64::MAX - 2
            },
            SeqRange {
                start: u64::MAX,
                end: u64::MAX
            }
        ]
    );
}
