//! How many partitions (shards, feed ranges) each relay instance takes: the
//! one balancing rule of every host that shares partitions through leases.

/// The share of one of `instances` live instances over `partitions`
/// partitions: `ceil(partitions / instances)`, so that every partition has an
/// owner while no instance holds more than one over any other. With a single
/// instance (or none counted), it is every partition.
pub fn fair_share(partitions: usize, instances: usize) -> usize {
    partitions.div_ceil(instances.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_partition_and_differ_by_at_most_one() {
        assert_eq!(fair_share(4, 1), 4);
        assert_eq!(fair_share(4, 2), 2);
        assert_eq!(fair_share(4, 3), 2);
        assert_eq!(fair_share(1, 2), 1);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
        for partitions in 0..40 {
            for instances in 1..10 {
                let share = fair_share(partitions, instances);
                assert!(share * instances >= partitions);
                assert!(share == 0 || (share - 1) * instances < partitions);
            }
        }
    }
}
