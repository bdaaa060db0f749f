//! Which shards a runner takes and which it hands over: every live runner
//! aims at its fair share of the shards that can be worked on now
//! ([`outbox_core::fair_share`]), takes free ones up to it, and a runner
//! above its share (or at a rounded-up share while another has less than
//! the rounded-down one) releases a shard at a batch boundary when another
//! runner is short, so shards change hands without two runners reading one.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodbstreams::types::Shard;

use crate::Lease;

/// A shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamShard {
    pub(crate) shard_id: String,
    pub(crate) parent: Option<String>,
}

impl StreamShard {
    pub(crate) fn from_sdk(shard: &Shard) -> Option<Self> {
        Some(Self {
            shard_id: shard.shard_id.clone()?,
            parent: shard.parent_shard_id.clone().filter(|p| !p.is_empty()),
        })
    }
}

/// What one runner does with the leases in one discovery round.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LeasePlan<'a> {
    /// Free shards to take, parents before children, in stream order.
    pub(crate) take: Vec<&'a StreamShard>,
    /// How many of its shards to hand over.
    pub(crate) shed: usize,
    /// Its share.
    pub(crate) target: usize,
}

/// The plan of `owner`, which holds `held`, among `runners` (the live
/// announced ones; holders of live leases count too).
///
/// A shard can be worked on when it is not finished and has no parent in
/// the stream, or a finished one (a parent no longer listed was trimmed away:
/// there is nothing left to wait for), so each aggregate's events keep their
/// order across splits. A shard is free when no other runner holds an
/// unexpired lease on it.
pub(crate) fn plan_leases<'a>(
    shards: &'a [StreamShard],
    leases: &[Lease],
    runners: &[String],
    owner: &str,
    held: &HashSet<String>,
    now_ms: i64,
) -> LeasePlan<'a> {
    let by_id: HashMap<&str, &Lease> = leases.iter().map(|l| (l.shard_id.as_str(), l)).collect();
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let workable: Vec<&StreamShard> = shards
        .iter()
        .filter(|shard| {
            if by_id.get(shard.shard_id.as_str()).is_some_and(|l| l.finished) {
                return false;
            }
            match &shard.parent {
                None => true,
                Some(parent) => {
                    !listed.contains(parent.as_str())
                        || by_id.get(parent.as_str()).is_some_and(|l| l.finished)
                }
            }
        })
        .collect();

    let mut counts: BTreeMap<&str, usize> = runners.iter().map(|r| (r.as_str(), 0)).collect();
    counts.insert(owner, 0);
    let mut free = Vec::new();
    for shard in &workable {
        if held.contains(&shard.shard_id) {
            *counts.entry(owner).or_default() += 1;
            continue;
        }
        match by_id.get(shard.shard_id.as_str()) {
            Some(lease) if lease.is_held_by_other(owner, now_ms) => {
                let holder = lease.owner.as_deref().unwrap_or_default();
                *counts.entry(holder).or_default() += 1;
            }
            _ => free.push(*shard),
        }
    }
    // Every runner holds `low` or `high` (= `low + 1` unless they divide evenly).
    let low = workable.len() / counts.len();
    let target = outbox_core::fair_share(workable.len(), counts.len());
    let mine = counts.get(owner).copied().unwrap_or_default();
    let take: Vec<&StreamShard> = free.iter().copied().take(target.saturating_sub(mine)).collect();
    let unclaimed = free.len() - take.len();
    let others = || {
        counts
            .iter()
            .filter(|(runner, _)| **runner != owner)
            .map(|(_, count)| *count)
    };
    let short_of_target: usize = others().map(|count| target.saturating_sub(count)).sum();
    let short_of_low: usize = others().map(|count| low.saturating_sub(count)).sum();
    let shed = if mine > target {
        (mine - target).min(short_of_target.saturating_sub(unclaimed))
    } else if mine == target && target > low && short_of_low > unclaimed {
        1
    } else {
        0
    };
    LeasePlan { take, shed, target }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>) -> StreamShard {
        StreamShard {
            shard_id: id.into(),
            parent: parent.map(Into::into),
        }
    }

    fn lease(id: &str, owner: Option<&str>, expires_at_ms: i64, finished: bool) -> Lease {
        Lease {
            stream_arn: "arn".into(),
            shard_id: id.into(),
            owner: owner.map(Into::into),
            expires_at_ms,
            checkpoint: None,
            finished,
            parent: None,
            failures: 0,
            failing_position: None,
            failing_since_ms: None,
        }
    }

    fn alone(shards: &[StreamShard], leases: &[Lease], now_ms: i64) -> Vec<String> {
        ids(&plan_leases(shards, leases, &[], "me", &HashSet::new(), now_ms).take)
    }

    fn ids(shards: &[&StreamShard]) -> Vec<String> {
        shards.iter().map(|s| s.shard_id.clone()).collect()
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn children_wait_for_their_parents() {
        let shards = [shard("a", None), shard("b", Some("a")), shard("c", Some("b"))];
        assert_eq!(alone(&shards, &[], 0), ["a"]);
        let leases = [lease("a", None, 0, true)];
        assert_eq!(alone(&shards, &leases, 0), ["b"]);
        let leases = [lease("a", None, 0, true), lease("b", None, 0, true)];
        assert_eq!(alone(&shards, &leases, 0), ["c"]);
    }

    #[test]
    fn a_parent_in_progress_holds_back_its_children() {
        let shards = [shard("a", None), shard("b", Some("a")), shard("c", Some("a"))];
        let leases = [lease("a", Some("me"), 10, false)];
        assert_eq!(alone(&shards, &leases, 0), ["a"]);
        let leases = [lease("a", Some("other"), 10, false)];
        assert!(alone(&shards, &leases, 0).is_empty());
    }

    #[test]
    fn a_parent_gone_from_the_stream_does_not_block() {
        let shards = [shard("b", Some("trimmed")), shard("c", None)];
        assert_eq!(alone(&shards, &[], 0), ["b", "c"]);
        let leases = [lease("trimmed", Some("other"), 100, false)];
        assert_eq!(alone(&shards, &leases, 0), ["b", "c"]);
    }

    #[test]
    fn leases_of_others_count_until_they_expire() {
        let shards = [shard("a", None), shard("b", None), shard("c", None)];
        let leases = [
            lease("a", Some("other"), 1_000, false),
            lease("b", Some("me"), 1_000, false),
            lease("c", None, 0, true),
        ];
        assert_eq!(alone(&shards, &leases, 1_000), ["b"]);
        assert_eq!(alone(&shards, &leases, 1_001), ["a", "b"]);
    }

    /// Runners taking turns at discovery over a fake stream of `m` shards,
    /// each acting on its plan: what each holds once nothing changes.
    fn settle(
        m: usize,
        runners: &[&str],
        mut held: BTreeMap<String, HashSet<String>>,
    ) -> BTreeMap<String, usize> {
        let shards: Vec<StreamShard> = (0..m).map(|i| shard(&format!("s{i:02}"), None)).collect();
        let announced = names(runners);
        for round in 0..20 {
            let mut changed = false;
            for runner in runners {
                let leases: Vec<Lease> = held
                    .iter()
                    .flat_map(|(owner, shards)| {
                        shards.iter().map(move |s| lease(s, Some(owner), 10_000, false))
                    })
                    .collect();
                let mine = held.entry((*runner).to_owned()).or_default().clone();
                let plan = plan_leases(&shards, &leases, &announced, runner, &mine, 0);
                let entry = held.entry((*runner).to_owned()).or_default();
                for shard in &plan.take {
                    changed |= entry.insert(shard.shard_id.clone());
                }
                let mut shed: Vec<String> = entry.iter().cloned().collect();
                shed.sort();
                for id in shed.iter().rev().take(plan.shed) {
                    changed |= entry.remove(id);
                }
            }
            if !changed && round > 0 {
                break;
            }
        }
        held.iter()
            .map(|(owner, shards)| (owner.clone(), shards.len()))
            .collect()
    }

    #[test]
    fn runners_split_the_shards_fairly() {
        for (m, runners, expected) in [
            (4, vec!["a"], vec![4]),
            (4, vec!["a", "b"], vec![2, 2]),
            (5, vec!["a", "b"], vec![2, 3]),
            (4, vec!["a", "b", "c"], vec![1, 1, 2]),
            (6, vec!["a", "b", "c"], vec![2, 2, 2]),
            (7, vec!["a", "b", "c"], vec![2, 2, 3]),
            (1, vec!["a", "b"], vec![0, 1]),
        ] {
            let counts = settle(m, &runners, BTreeMap::new());
            let mut got: Vec<usize> = runners
                .iter()
                .map(|r| counts.get(*r).copied().unwrap_or(0))
                .collect();
            got.sort_unstable();
            assert_eq!(got, expected, "{m} shards, runners {runners:?}");
        }
    }

    #[test]
    fn a_runner_that_joins_gets_its_share_from_one_holding_everything() {
        let all: HashSet<String> = (0..4).map(|i| format!("s{i:02}")).collect();
        let held = BTreeMap::from([("a".to_owned(), all)]);
        let counts = settle(4, &["a", "b"], held);
        assert_eq!((counts["a"], counts["b"]), (2, 2));
    }

    #[test]
    fn a_runner_hands_over_only_what_another_runner_lacks() {
        let shards: Vec<StreamShard> = (0..4).map(|i| shard(&format!("s{i}"), None)).collect();
        let mine: HashSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
        let leases: Vec<Lease> = shards
            .iter()
            .map(|s| lease(&s.shard_id, Some("a"), 10, false))
            .collect();
        // Alone, or with a runner that no longer announces itself: nothing to hand over.
        let plan = plan_leases(&shards, &leases, &names(&["a"]), "a", &mine, 0);
        assert_eq!((plan.shed, plan.target), (0, 4));
        // A second runner, short of its two: two are handed over.
        let plan = plan_leases(&shards, &leases, &names(&["a", "b"]), "a", &mine, 0);
        assert_eq!((plan.shed, plan.target), (2, 2));
        // The newcomer waits for them: none is free yet.
        let plan = plan_leases(&shards, &leases, &names(&["a", "b"]), "b", &HashSet::new(), 0);
        assert!(plan.take.is_empty());
        assert_eq!(plan.shed, 0);
    }

    #[test]
    fn one_shard_and_two_runners_never_changes_hands_while_its_owner_lives() {
        let shards = [shard("s", None)];
        let leases = [lease("s", Some("a"), 10, false)];
        let a = plan_leases(
            &shards,
            &leases,
            &names(&["a", "b"]),
            "a",
            &HashSet::from(["s".to_owned()]),
            0,
        );
        assert_eq!((a.take.len(), a.shed), (0, 0));
        let b = plan_leases(&shards, &leases, &names(&["a", "b"]), "b", &HashSet::new(), 0);
        assert_eq!((b.take.len(), b.shed), (0, 0));
        // Once the owner's lease has expired, the other takes it over.
        let b = plan_leases(&shards, &leases, &names(&["b"]), "b", &HashSet::new(), 11);
        assert_eq!(ids(&b.take), ["s"]);
    }

    #[test]
    fn sdk_shards_without_id_are_ignored_and_empty_parents_are_none() {
        let sdk = Shard::builder().shard_id("s-1").parent_shard_id("").build();
        assert_eq!(StreamShard::from_sdk(&sdk), Some(shard("s-1", None)));
        assert_eq!(StreamShard::from_sdk(&Shard::builder().build()), None);
    }
}
