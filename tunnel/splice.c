/* The zero-copy relay (Linux splice(2)) for tunnels with a plain TCP socket
 * on both sides: HTTP/1.1 tunnels accepted on a plain listener.
 *
 * The copy relay (relay.c) reads into a user-space buffer and writes it out
 * again. Spliced, the bytes go socket -> pipe -> socket inside the kernel,
 * as HAProxy does. A tunnel switches only between reads, with nothing
 * queued on either side, so byte order is kept:
 *   - the copy relay's endpoints stop reading; their uv_tcp handles stay
 *     open, own the sockets and close them at teardown as before;
 *   - each socket is dup'd and the duplicate watched by a uv_poll handle
 *     (libuv allows one watcher per descriptor; the dup is another one);
 *   - one pipe per direction, used ping-pong: splice in while it is empty,
 *     splice out until it is empty. A full pipe is the backpressure: the
 *     direction stops reading until its destination takes the bytes.
 * Half-close: end of stream from a source becomes shutdown(SHUT_WR) on its
 * destination once its pipe is empty; the tunnel ends when both directions
 * have ended. An error on either socket ends the tunnel with a reset, with
 * the same close reasons as the copy relay. Payload is never looked at:
 * the require_tls check is over before a tunnel may switch.
 *
 * Ownership: the tunnel owns its tn_splice and counts it in eps_open.
 * tn__splice_stop() closes the descriptors at once and the poll handles
 * through uv_close; the last close callback frees the tn_splice and tells
 * the tunnel, which may then be freed. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

/* Pipe capacity: the default 64 KiB makes splice slower than copying; 1 MiB
 * (the default fs.pipe-max-size) makes it cheaper per byte than the copy
 * relay (docs/benchmarks.md). Best effort: past the per-user pipe budget
 * the kernel refuses and the pipe keeps what it has. */
#define PIPE_SIZE (1024 * 1024)
#define PIPE_MIN (256 * 1024)
#define ROUNDS 4 /* pipe-fulls per direction per wake-up: fairness */
#define FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

enum { DOWN = 0, UP = 1 }; /* sockets: [DOWN] the device's, [UP] the destination's */

/* dir[i] carries the bytes read from fd[i] to fd[!i]. */
typedef struct splice_dir {
  int pipe[2];
  size_t in_pipe;
  bool src_eof;
  bool shut; /* its destination was shut down: the direction is over */
} splice_dir;

typedef struct tn_splice {
  tn_tunnel *t;
  int fd[2];         /* duplicates of the endpoints' sockets */
  uv_poll_t poll[2]; /* on fd[i] */
  int events[2];     /* what poll[i] watches now */
  int handles;       /* poll handles initialised and not yet closed */
  splice_dir dir[2];
} tn_splice;

void tn__splice_init(tn_tunnel *t) {
  tn_splice_mode m = tn__opts(t->engine)->splice;
  t->splice_ok = m != TN_SPLICE_OFF && t->proto->may_splice && t->down == &t->conn->tcp.ep;
  t->splice_want = t->splice_ok && m == TN_SPLICE_ALWAYS;
}

static tn_ep *ep_of(tn_tunnel *t, int i) { return i == DOWN ? t->down : &t->up.ep; }

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

static void on_poll_closed(uv_handle_t *h) {
  tn_splice *s = h->data;
  if (--s->handles > 0)
    return;
  tn_tunnel *t = s->t;
  free(s);
  if (t)
    tn__tunnel_ep_closed(t);
}

/* Closes what s holds. Stopping a poll handle removes its descriptor from
 * epoll at once, so the descriptors can be closed right after. */
static void release(tn_splice *s) {
  int open = s->handles;
  for (int i = 0; i < open; i++)
    uv_close((uv_handle_t *)&s->poll[i], on_poll_closed);
  for (int i = 0; i < 2; i++) {
    close_fd(&s->fd[i]);
    close_fd(&s->dir[i].pipe[0]);
    close_fd(&s->dir[i].pipe[1]);
  }
  if (open == 0)
    free(s);
}

/* Dups the socket under an endpoint; -1 with errno set on failure. */
static int dup_socket(uv_tcp_t *tcp) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)tcp, &fd) != 0) {
    errno = EBADF;
    return -1;
  }
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* A pipe of at least PIPE_MIN bytes, or -1 (errno set): with smaller pipes
 * splice costs more CPU per byte than copying, so the tunnel keeps copying.
 * The kernel refuses large pipes past fs.pipe-max-size or, for an
 * unprivileged user (mcgw after [gateway] user), past the user's pipe budget
 * fs.pipe-user-pages-soft. */
static int open_pipe(int p[2]) {
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
    return -1;
  if (fcntl(p[1], F_SETPIPE_SZ, PIPE_SIZE) >= 0 || fcntl(p[1], F_SETPIPE_SZ, PIPE_MIN) >= 0)
    return 0;
  int saved = errno;
  close_fd(&p[0]);
  close_fd(&p[1]);
  errno = saved;
  return -1;
}

/* The descriptors and handles for t, not yet watching; NULL (errno set) when
 * descriptors are short, with nothing left open. */
static tn_splice *splice_new(tn_tunnel *t) {
  tn_splice *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  for (int i = 0; i < 2; i++)
    s->fd[i] = s->dir[i].pipe[0] = s->dir[i].pipe[1] = -1;
  uv_loop_t *loop = tn__loop(t->engine);
  if ((s->fd[DOWN] = dup_socket(&t->conn->tcp.tcp)) < 0 ||
      (s->fd[UP] = dup_socket(&t->up.tcp)) < 0 || open_pipe(s->dir[DOWN].pipe) != 0 ||
      open_pipe(s->dir[UP].pipe) != 0)
    goto fail;
  for (int i = 0; i < 2; i++) {
    int err = uv_poll_init(loop, &s->poll[i], s->fd[i]);
    if (err) {
      errno = -err;
      goto fail;
    }
    s->poll[i].data = s;
    s->handles++;
  }
  return s;
fail:;
  int saved = errno;
  release(s);
  errno = saved;
  return NULL;
}

static void counted(tn_tunnel *t, int d, size_t n) {
  if (d == DOWN) {
    t->bytes_up += n;
    tn__count_bytes(t->engine, n, 0);
  } else {
    t->bytes_down += n;
    tn__count_bytes(t->engine, 0, n);
  }
}

/* The source of direction d has ended and its pipe is empty: FIN. */
static int shut_dst(tn_splice *s, int d, int *bad) {
  splice_dir *p = &s->dir[d];
  if (p->shut)
    return 0;
  if (shutdown(s->fd[!d], SHUT_WR) != 0) {
    *bad = !d;
    return -errno;
  }
  p->shut = true;
  ep_of(s->t, !d)->shut = true; /* a later reset close of that side sends no RST */
  return 0;
}

/* Moves bytes from fd[d] to fd[!d] until the source is dry, the destination
 * takes no more, or ROUNDS pipe-fulls went (polling is level-triggered, so
 * the rest follows on the next wake-up). Bytes are counted as read, as the
 * copy relay does. Returns 0, or a negative errno with *bad the socket that
 * failed. */
static int pump(tn_splice *s, int d, int *bad) {
  splice_dir *p = &s->dir[d];
  for (int round = 0; round < ROUNDS && !p->shut; round++) {
    if (p->in_pipe == 0 && !p->src_eof) {
      ssize_t n = splice(s->fd[d], NULL, p->pipe[1], NULL, PIPE_SIZE, FLAGS);
      if (n < 0 && errno == EAGAIN)
        return 0;
      if (n < 0) {
        *bad = d;
        return -errno;
      }
      if (n == 0) {
        p->src_eof = true;
        ep_of(s->t, d)->eof = true;
      } else {
        p->in_pipe = (size_t)n;
        counted(s->t, d, (size_t)n);
      }
    }
    if (p->in_pipe) {
      ssize_t n = splice(p->pipe[0], NULL, s->fd[!d], NULL, p->in_pipe, FLAGS);
      if (n < 0 && errno == EAGAIN)
        return 0;
      if (n < 0) {
        *bad = !d;
        return -errno;
      }
      p->in_pipe -= (size_t)n;
      if (p->in_pipe)
        return 0; /* taken in part: wait for room */
    }
    if (p->src_eof)
      return shut_dst(s, d, bad);
  }
  return 0;
}

/* What fd[i] waits for: readable while its outgoing direction's pipe is
 * empty and open; writable while the incoming direction has bytes for it. */
static int wanted(const tn_splice *s, int i) {
  const splice_dir *from = &s->dir[i], *to = &s->dir[!i];
  int ev = 0;
  if (!from->src_eof && from->in_pipe == 0)
    ev |= UV_READABLE;
  if (to->in_pipe)
    ev |= UV_WRITABLE;
  return ev;
}

static void on_poll(uv_poll_t *h, int status, int events);

static int watch(tn_splice *s) {
  for (int i = 0; i < 2; i++) {
    int ev = wanted(s, i);
    if (ev == s->events[i])
      continue;
    int err = ev ? uv_poll_start(&s->poll[i], ev, on_poll) : uv_poll_stop(&s->poll[i]);
    if (err)
      return err;
    s->events[i] = ev;
  }
  return 0;
}

/* The uplink is dead (tn__uplink_dead: keepalive, TCP_USER_TIMEOUT). */
static const char *reset_reason(int bad, int err) {
  if (bad == DOWN)
    return "reset_down";
  return tn__uplink_dead(err) ? "uplink_dead" : "reset_up";
}

/* libuv reports a socket error (POLLERR) as UV_EBADF: the socket's own
 * error tells a dead uplink (ETIMEDOUT, EHOSTUNREACH...) from a reset. */
static void on_poll(uv_poll_t *h, int status, int events) {
  tn_splice *s = h->data;
  tn_tunnel *t = s->t;
  int i = h == &s->poll[DOWN] ? DOWN : UP, bad = i;
  int err = status < 0 ? tn__sock_error(s->fd[i], status) : 0;
  if (!err && (events & UV_READABLE))
    err = pump(s, i, &bad);
  if (!err && (events & UV_WRITABLE))
    err = pump(s, !i, &bad);
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (err) {
    tn__tunnel_close(t, TN_RESULT_OK, reset_reason(bad, err), TN_CLOSE_RESET);
    return;
  }
  if (s->dir[DOWN].shut && s->dir[UP].shut) {
    tn__tunnel_close(t, TN_RESULT_OK, "eof", TN_CLOSE_FIN);
    return;
  }
  if (watch(s) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
}

static bool switchable(tn_tunnel *t) {
  tn_ep *down = t->down, *up = &t->up.ep;
  return t->phase == TN_PHASE_RELAY && t->tls_checked >= 5 && !down->eof && !up->eof &&
         !down->shut && !up->shut && !down->closing && !up->closing && tn__ep_queued(down) == 0 &&
         tn__ep_queued(up) == 0;
}

bool tn__splice_try(tn_tunnel *t) {
  if (!t->splice_ok || t->splice || !switchable(t) || !tn__splice_budget(t->engine))
    return false;
  tn_splice *s = splice_new(t);
  if (!s) {
    /* This tunnel keeps copying, which is correct; said once at warn. */
    tn_log(tn__logger(t->engine), tn__splice_warn_once(t->engine) ? TN_LOG_WARN : TN_LOG_DEBUG,
           "splice_unavailable", TN_U("id", t->id),
           TN_S("error", uv_err_name(uv_translate_sys_error(errno))),
           TN_S("hint", "tunnels copy instead; EPERM: the pipe budget (fs.pipe-user-pages-soft, "
                        "fs.pipe-max-size) is spent; EMFILE: descriptors"),
           TN_LOG_END);
    t->splice_ok = false;
    return false;
  }
  s->t = t;
  t->eps_open++;
  t->splice = s;
  tn__count_splice(t->engine, true);
  tn__ep_read_stop(t->down);
  tn__ep_read_stop(&t->up.ep);
  if (watch(s) != 0) {
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
    return true;
  }
  return true;
}

void tn__splice_stop(tn_tunnel *t) {
  tn_splice *s = t->splice;
  if (!s)
    return;
  t->splice = NULL;
  tn__count_splice(t->engine, false);
  release(s);
}
