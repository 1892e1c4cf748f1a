//! The worker threads that do every connection's blocking work off the event loop.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use mio::{Token, Waker};
use tern_core::replay::Recorder as Session;
use tern_host::service::{Answer, ConnectionHandler, Work};

/// What a worker is asked to do.
pub(crate) enum Job {
    /// Run `works` in order with the connection's handler, then hand the handler back.
    Work {
        token: Token,
        handler: ConnectionHandler,
        works: Vec<Work>,
    },
    /// The connection is over: log its end and drop what it still held (a spool file).
    Finish {
        handler: ConnectionHandler,
        session: Box<Session>,
    },
}

/// A handler coming back from a worker with the answers its work produced, in order.
pub(crate) struct Done {
    pub(crate) token: Token,
    pub(crate) handler: ConnectionHandler,
    pub(crate) answers: Vec<Answer>,
}

/// A fixed set of threads fed by one channel; each finished job wakes the event loop.
pub(crate) struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn new(size: usize, waker: Arc<Waker>) -> io::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (report, done) = mpsc::channel();
        let mut workers = Vec::new();
        for n in 0..size {
            let (queue, report, waker) = (Arc::clone(&queue), report.clone(), Arc::clone(&waker));
            let worker = thread::Builder::new()
                .name(format!("work-{n}"))
                .spawn(move || work_loop(&queue, &report, &waker))?;
            workers.push(worker);
        }
        Ok(Pool {
            jobs: Some(jobs),
            done,
            workers,
        })
    }

    pub(crate) fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The workers outlive the loop, so the channel is open while anyone submits.
            let _ = jobs.send(job);
        }
    }

    /// The handlers back from the workers since the last call.
    pub(crate) fn finished(&self) -> impl Iterator<Item = Done> + '_ {
        self.done.try_iter()
    }

    /// Lets the workers finish every job already submitted, then waits for them.
    pub(crate) fn join(mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn work_loop(queue: &Mutex<Receiver<Job>>, report: &Sender<Done>, waker: &Waker) {
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        match job {
            Job::Work {
                token,
                mut handler,
                works,
            } => {
                let answers = works.into_iter().filter_map(|w| handler.work(w)).collect();
                let done = Done {
                    token,
                    handler,
                    answers,
                };
                if report.send(done).is_err() {
                    return;
                }
                if let Err(e) = waker.wake() {
                    tracing::warn!(error = %e, "cannot wake the event loop");
                }
            }
            Job::Finish { handler, session } => handler.finish(&session),
        }
    }
}
