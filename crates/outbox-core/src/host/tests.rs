//! The host skeleton over an in-memory database whose leases and workers
//! are scripted, under paused time.

use std::sync::Mutex;

use super::*;

#[derive(Debug, thiserror::Error)]
enum FakeLeaseError {
    #[error("lease lost")]
    Lost,
    #[error("lease store unavailable")]
    Unavailable,
    #[error("lease table missing")]
    Missing,
}

impl LeaseFault for FakeLeaseError {
    fn is_lost(&self) -> bool {
        matches!(self, Self::Lost)
    }

    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable)
    }
}

#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error("lease store")]
    Lease(#[from] FakeLeaseError),
    #[error("worker failed")]
    Worker,
}

/// What a fake worker does once started.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Works until told otherwise, answering `Finish` with `Finished`.
    Forever,
    /// Ends at once with `Done`.
    Done,
    /// Ends at once with `Fatal`.
    Fail,
}

#[derive(Default)]
struct Fake {
    /// Partitions free to take, with what their worker does.
    free: Mutex<Vec<(String, Script)>>,
    /// Partitions to finish at the next discovery.
    shed: Mutex<Vec<String>>,
    /// What each renewal of a partition answers (popped; `Ok` when empty).
    renewals: Mutex<HashMap<String, Vec<Result<(), FakeLeaseError>>>>,
    released: Mutex<Vec<String>>,
    ended: Mutex<Vec<(String, &'static str)>>,
    withdrawn: Mutex<bool>,
}

impl Fake {
    fn with(free: &[(&str, Script)]) -> Self {
        let fake = Self::default();
        *fake.free.lock().unwrap() = free.iter().map(|(id, s)| ((*id).to_owned(), *s)).collect();
        fake
    }

    fn ended(&self) -> Vec<(String, &'static str)> {
        let mut ended = self.ended.lock().unwrap().clone();
        ended.sort();
        ended
    }

    fn released(&self) -> Vec<String> {
        let mut released = self.released.lock().unwrap().clone();
        released.sort();
        released
    }
}

impl Partitions for Fake {
    type Lease = (String, Script);
    type LeaseError = FakeLeaseError;
    type Error = FakeError;

    const NAME: &'static str = "partition";

    async fn discover(&self, held: Holdings<'_>) -> Result<Plan<Self::Lease>, RoundError<FakeError>> {
        let mut plan = Plan::default();
        for (id, script) in self.free.lock().unwrap().drain(..) {
            assert!(!held.holds(&id), "{id} offered twice");
            plan.acquired.push(Acquired {
                id: id.clone(),
                lease: (id, script),
                at: Instant::now(),
            });
        }
        plan.finish = std::mem::take(&mut *self.shed.lock().unwrap());
        Ok(plan)
    }

    async fn renew(&self, id: &str) -> Result<(), FakeLeaseError> {
        let mut renewals = self.renewals.lock().unwrap();
        renewals
            .get_mut(id)
            .and_then(|answers| answers.pop())
            .unwrap_or(Ok(()))
    }

    async fn release(&self, id: &str) {
        self.released.lock().unwrap().push(id.to_owned());
    }

    async fn work(&self, (id, script): Self::Lease, mut stop: StopSignal) -> WorkerExit<FakeError> {
        let exit = match script {
            Script::Done => WorkerExit::Done,
            Script::Fail => WorkerExit::Fatal(FakeError::Worker),
            Script::Forever => loop {
                match stop.state() {
                    Stop::Run => stop.pause(Duration::from_secs(3600)).await,
                    Stop::Finish => break WorkerExit::Finished,
                    Stop::Lost => break WorkerExit::Lost,
                }
            },
        };
        let name = match &exit {
            WorkerExit::Done => "done",
            WorkerExit::Finished => "finished",
            WorkerExit::Lost => "lost",
            WorkerExit::Interrupted => "interrupted",
            WorkerExit::Fatal(_) => "fatal",
        };
        self.ended.lock().unwrap().push((id, name));
        exit
    }

    async fn withdraw(&self) {
        *self.withdrawn.lock().unwrap() = true;
    }

    fn progress(&self, _held: usize) {}
}

fn config() -> HostConfig {
    HostConfig {
        owner: "me".into(),
        lease_duration: Duration::from_secs(9),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        batch_deadline: Duration::from_secs(30),
        discovery_interval: Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_every_worker_and_releases_its_lease() {
    let fake = Fake::with(&[("a", Script::Forever), ("b", Script::Forever)]);
    run(&fake, &config(), tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        fake.ended(),
        [("a".to_owned(), "finished"), ("b".to_owned(), "finished")]
    );
    assert_eq!(fake.released(), ["a", "b"]);
    assert!(*fake.withdrawn.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_done_partition_is_not_released() {
    let fake = Fake::with(&[("closed", Script::Done)]);
    run(&fake, &config(), tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(fake.ended(), [("closed".to_owned(), "done")]);
    assert!(fake.released().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_handed_over_partition_finishes_and_is_released_while_the_run_goes_on() {
    let fake = Fake::with(&[("a", Script::Forever), ("b", Script::Forever)]);
    let shutdown = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fake.shed.lock().unwrap().push("b".into());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            fake.ended(),
            [("b".to_owned(), "finished")],
            "b is handed over before the shutdown"
        );
        assert_eq!(fake.released(), ["b"]);
    };
    run(&fake, &config(), shutdown).await.unwrap();
    assert_eq!(fake.released(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_its_worker_without_a_release() {
    let fake = Fake::with(&[("a", Script::Forever), ("b", Script::Forever)]);
    fake.renewals
        .lock()
        .unwrap()
        .insert("a".into(), vec![Err(FakeLeaseError::Lost)]);
    run(&fake, &config(), tokio::time::sleep(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        fake.ended(),
        [("a".to_owned(), "lost"), ("b".to_owned(), "finished")]
    );
    assert_eq!(fake.released(), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_cannot_be_renewed_in_time_stops_its_worker_before_it_expires() {
    let fake = Fake::with(&[("a", Script::Forever)]);
    // Renewals at 3 s and 6 s fail; at 6 s only a third of the lease is left.
    fake.renewals.lock().unwrap().insert(
        "a".into(),
        vec![Err(FakeLeaseError::Unavailable), Err(FakeLeaseError::Unavailable)],
    );
    let shutdown = async {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert!(fake.ended().is_empty(), "one failed renewal leaves time to retry");
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(fake.ended(), [("a".to_owned(), "lost")]);
    };
    run(&fake, &config(), shutdown).await.unwrap();
    assert!(fake.released().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fatal_worker_ends_the_run_after_the_others_finish() {
    let fake = Fake::with(&[("a", Script::Forever), ("bad", Script::Fail)]);
    let error = run(&fake, &config(), std::future::pending()).await.unwrap_err();
    assert!(matches!(error, FakeError::Worker));
    assert_eq!(
        fake.ended(),
        [("a".to_owned(), "finished"), ("bad".to_owned(), "fatal")]
    );
    assert_eq!(fake.released(), ["a", "bad"]);
}

#[tokio::test(start_paused = true)]
async fn a_lease_store_that_refuses_a_renewal_ends_the_run() {
    let fake = Fake::with(&[("a", Script::Forever)]);
    fake.renewals
        .lock()
        .unwrap()
        .insert("a".into(), vec![Err(FakeLeaseError::Missing)]);
    let error = run(&fake, &config(), std::future::pending()).await.unwrap_err();
    assert!(matches!(error, FakeError::Lease(FakeLeaseError::Missing)));
    assert_eq!(fake.released(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_lease_call_retries_transient_failures_then_lets_the_partition_go() {
    let (_tx, rx) = watch::channel(Stop::Run);
    let stop = StopSignal(rx);
    let backoff = config().backoff();
    let calls = Mutex::new(0);
    let exit = lease_call::<(), _, FakeError, _>(&stop, backoff, || {
        *calls.lock().unwrap() += 1;
        async { Err(FakeLeaseError::Unavailable) }
    })
    .await
    .unwrap_err();
    assert!(matches!(exit, WorkerExit::Interrupted));
    assert_eq!(*calls.lock().unwrap(), LEASE_CALL_RETRIES + 1);

    let exit = lease_call::<(), _, FakeError, _>(&stop, backoff, || async { Err(FakeLeaseError::Lost) })
        .await
        .unwrap_err();
    assert!(matches!(exit, WorkerExit::Lost));
}

#[test]
fn a_config_names_the_value_that_is_wrong() {
    let mut bad = config();
    bad.owner = " ".into();
    assert_eq!(bad.validate().unwrap_err(), "owner is empty");
    let mut bad = config();
    bad.backoff_max = Duration::from_millis(10);
    assert!(bad.validate().unwrap_err().contains("backoff_max"));
    assert_eq!(config().validate(), Ok(()));
}
