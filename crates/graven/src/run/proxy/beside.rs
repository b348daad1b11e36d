//! One future run beside another that is only looked at when it has
//! something to say.
//!
//! A client connection's task waits on its connection (woken a few times
//! a request, as its sockets become ready) and on what may end it: the
//! accept loop closing it to make room, its timer, the proxy stopping.
//! `tokio::select!` polls every branch at every wake: those three were
//! polled three times a request each, in vain (a poll of a `Notify`
//! takes its lock): 2,500 instructions a request of the proxy's 35,600,
//! under callgrind. [`Beside`] polls the side only once it was woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::Either;
use futures_util::task::AtomicWaker;

/// Polls `main` at every wake of its task, and `side` only after
/// something `side` waits for woke it (and once at the start); ready
/// with whichever is ready first, `main` first when both are.
pub(super) struct Beside<M, S> {
    main: M,
    side: S,
    woken: Arc<SideWoken>,
    /// The waker `side` is polled with: `woken`'s.
    side_waker: Waker,
}

/// Whether the side was woken since it was last polled, and the task to
/// wake when it is.
struct SideWoken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWoken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<M: Future + Unpin, S: Future + Unpin> Beside<M, S> {
    pub(super) fn new(main: M, side: S) -> Self {
        let woken = Arc::new(SideWoken { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let side_waker = Waker::from(Arc::clone(&woken));
        Self { main, side, woken, side_waker }
    }
}

impl<M: Future + Unpin, S: Future + Unpin> Future for Beside<M, S> {
    type Output = Either<M::Output, S::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.main).poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        // Before the look at `woken`: a wake after it wakes this task.
        this.woken.task.register(cx.waker());
        if this.woken.woken.swap(false, Ordering::Acquire)
            && let Poll::Ready(out) = Pin::new(&mut this.side).poll(&mut Context::from_waker(&this.side_waker))
        {
            return Poll::Ready(Either::Right(out));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A future never ready that counts its polls and keeps the waker of
    /// its last.
    fn watched(polls: &Rc<Cell<usize>>, waker: &Rc<Cell<Option<Waker>>>) -> impl Future<Output = ()> + Unpin {
        let (polls, waker) = (Rc::clone(polls), Rc::clone(waker));
        std::future::poll_fn(move |cx| {
            polls.set(polls.get() + 1);
            waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
    }

    #[test]
    fn the_side_is_polled_at_the_start_and_then_only_when_woken_and_its_wake_wakes_the_task() {
        let task = Arc::new(Counting(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        let (main_polls, main_waker) = (Rc::default(), Rc::default());
        let (side_polls, side_waker) = (Rc::default(), Rc::default());
        let mut both = Beside::new(watched(&main_polls, &main_waker), watched(&side_polls, &side_waker));
        for _ in 0..5 {
            assert!(Pin::new(&mut both).poll(&mut cx).is_pending());
        }
        assert_eq!((main_polls.get(), side_polls.get()), (5, 1), "the side once, at the start");
        let side_wake: Option<Waker> = side_waker.take();
        side_wake.expect("the side's waker").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the side's wake wakes the task");
        assert!(Pin::new(&mut both).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut both).poll(&mut cx).is_pending());
        assert_eq!((main_polls.get(), side_polls.get()), (7, 2), "once for the one wake");
    }

    #[test]
    fn whichever_is_ready_first_ends_it_the_main_one_first() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut both = Beside::new(std::future::ready(1), std::future::ready("side"));
        assert!(matches!(Pin::new(&mut both).poll(&mut cx), Poll::Ready(Either::Left(1))));
        let mut side_first = Beside::new(std::future::pending::<u8>(), std::future::ready("side"));
        assert!(matches!(Pin::new(&mut side_first).poll(&mut cx), Poll::Ready(Either::Right("side"))));
    }
}
