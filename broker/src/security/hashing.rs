//! Password hashing (the PBKDF2 of a PLAIN login or an HTTP Basic check, milliseconds of CPU
//! each) on threads of its own at the lowest CPU priority (`nice` 19), a few at once. A flood
//! of logins, failed or not, then takes only the CPU that authenticated clients' requests
//! leave: when a Kafka request arrives the kernel runs its worker thread at once instead of
//! sharing the core with a hash in progress (on a saturated broker a hash waits longer, never
//! forever). The threads start with the first hash (processes that never hash have none).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads, and a permit per thread for the jobs queued or running.
pub struct Hashers {
    threads: usize,
    slots: Arc<Semaphore>,
    jobs: OnceLock<SyncSender<Job>>,
}

impl Hashers {
    pub fn new(threads: usize) -> Hashers {
        let threads = threads.max(1);
        Hashers {
            threads,
            slots: Arc::new(Semaphore::new(threads)),
            jobs: OnceLock::new(),
        }
    }

    /// Runs `hash` on a hashing thread, once one is free; `None` if the thread failed.
    pub async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The permit goes with the job: a caller that gave up (a client gone) frees its
            // place only when its job is done, not while it is still queued.
            let _slot = slot;
            if !reply.is_closed() {
                let _ = reply.send(hash());
            }
        });
        // A permit per thread and a queue place per thread: the queue always has room.
        self.jobs
            .get_or_init(|| start(self.threads))
            .try_send(job)
            .ok()?;
        answer.await.ok()
    }
}

fn start(threads: usize) -> SyncSender<Job> {
    let (jobs, queue) = sync_channel::<Job>(threads);
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..threads {
        let queue = queue.clone();
        let started = std::thread::Builder::new()
            .name(format!("skiff-hash-{i}"))
            .spawn(move || work(&queue));
        if let Err(error) = started {
            tracing::error!(%error, "cannot start a password hashing thread");
        }
    }
    jobs
}

fn work(queue: &Mutex<Receiver<Job>>) {
    // Linux keeps a nice value per thread: this one's only.
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::nice(19) {
        tracing::warn!(%error, "cannot lower the password hashing thread's priority");
    }
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return, // the process is ending
        };
        // A panicking hash fails its login (the reply is dropped), not the thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a password hash panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_run_on_their_own_lowered_threads_at_most_so_many_at_once() {
        let hashers = Arc::new(Hashers::new(2));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for i in 0..16 {
            let (hashers, running, most) = (hashers.clone(), running.clone(), most.clone());
            waiting.push(tokio::spawn(async move {
                hashers
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::yield_now();
                        running.fetch_sub(1, SeqCst);
                        let name = std::thread::current().name().map(str::to_owned);
                        #[cfg(target_os = "linux")]
                        let nice = rustix::process::getpriority_process(None).expect("priority");
                        #[cfg(not(target_os = "linux"))]
                        let nice = 19;
                        (i, name, nice)
                    })
                    .await
            }));
        }
        for (i, task) in waiting.into_iter().enumerate() {
            let (n, name, nice) = task.await.expect("task").expect("hashed");
            assert_eq!(n, i);
            assert!(name.is_some_and(|n| n.starts_with("skiff-hash-")));
            assert_eq!(nice, 19);
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    }

    #[tokio::test]
    async fn callers_that_give_up_and_hashes_that_panic_leave_the_rest_working() {
        let hashers = Arc::new(Hashers::new(1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let (started, running) = oneshot::channel::<()>();
        // One hash holds the only thread; callers behind it give up while queued.
        let blocked = {
            let hashers = hashers.clone();
            tokio::spawn(async move {
                hashers
                    .run(move || {
                        let _ = started.send(());
                        let _ = gate.lock().expect("gate").recv();
                    })
                    .await
            })
        };
        running.await.expect("the first hash runs");
        for _ in 0..3 {
            let hashers = hashers.clone();
            let gave_up =
                tokio::time::timeout(std::time::Duration::from_millis(20), hashers.run(|| ()))
                    .await;
            assert!(gave_up.is_err());
        }
        release.send(()).expect("release");
        assert_eq!(blocked.await.expect("task"), Some(()));
        assert_eq!(hashers.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(hashers.run(|| 7).await, Some(7));
    }
}
