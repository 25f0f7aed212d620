/* See https_connect.h. The race owns a delay timer and one uv_poll per
 * attempt (a slot per address, used once); it frees itself in the close
 * callback of its last handle, whether it ended by a winner, by every
 * attempt failing, or by its owner's cancel. */
#include "csc1/https_connect.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/he_order.h"

typedef struct attempt {
  uv_poll_t poll; /* first member: found from the handle */
  struct csc1__race *race;
  int fd; /* -1: not started, failed, or handed to the winner's owner */
  struct sockaddr_storage addr;
} attempt;

struct csc1__race {
  uv_timer_t delay; /* the next attempt's start; the first starts from it too */
  csc1__race_cb cb; /* NULL once called back or cancelled */
  void *arg;
  uint64_t delay_ms;
  csc1_https_socket_fn setup;
  void *setup_arg;
  int last_err;
  size_t n, next; /* slots, next to start */
  size_t live;    /* attempts connecting */
  size_t handles; /* open handles: the timer, attempt polls */
  attempt slot[]; /* in the order they are tried */
};

static void on_handle_closed(uv_handle_t *h) {
  csc1__race *race = h->data;
  if (--race->handles == 0)
    free(race);
}

static void attempt_close(attempt *a) {
  uv_close((uv_handle_t *)&a->poll, on_handle_closed);
  if (a->fd >= 0)
    close(a->fd);
  a->fd = -1;
  a->race->live--;
}

/* Closes every attempt still connecting and the timer. */
static void release(csc1__race *race) {
  race->cb = NULL;
  for (size_t i = 0; i < race->n; i++)
    if (race->slot[i].fd >= 0)
      attempt_close(&race->slot[i]);
  uv_close((uv_handle_t *)&race->delay, on_handle_closed);
}

/* Ends the race with its outcome: the handles close, then the callback. */
static void finish(csc1__race *race, int fd, int err) {
  csc1__race_cb cb = race->cb;
  void *arg = race->arg;
  release(race); /* the memory stays until the loop runs the close callbacks */
  cb(arg, fd, err);
}

static void won(attempt *a) {
  int fd = a->fd;
  a->fd = -1; /* the owner's now: attempt_close leaves it open */
  attempt_close(a);
  finish(a->race, fd, 0);
}

static void try_next(csc1__race *race);
static void on_delay(uv_timer_t *t);

/* RFC 8305 5: with no attempt left in flight the next starts at once. */
static void failed(attempt *a, int err) {
  csc1__race *race = a->race;
  race->last_err = err;
  attempt_close(a);
  if (race->live == 0) {
    uv_timer_stop(&race->delay);
    try_next(race);
  }
}

/* Connected or failed. libuv may report a failed connect as UV_EBADF
 * (POLLERR): the socket's own SO_ERROR says what happened. */
static void on_writable(uv_poll_t *p, int status, int events) {
  attempt *a = (attempt *)p;
  int so = 0;
  socklen_t len = sizeof(so);
  if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &so, &len) != 0)
    so = errno;
  int err = so ? -so : status;
  if (err == 0)
    won(a);
  else
    failed(a, err);
}

/* A socket through the hook, connecting: 0, or a negative errno (nothing
 * left open). */
static int attempt_start(csc1__race *race, attempt *a, uv_loop_t *loop) {
  int family = a->addr.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int err = race->setup ? race->setup(race->setup_arg, fd, family) : 0;
  socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  if (err == 0 && connect(fd, (struct sockaddr *)&a->addr, len) != 0 && errno != EINPROGRESS)
    err = -errno;
  if (err == 0)
    err = uv_poll_init_socket(loop, &a->poll, fd);
  if (err) {
    close(fd);
    return err;
  }
  a->poll.data = race;
  a->fd = fd;
  race->handles++;
  race->live++;
  uv_poll_start(&a->poll, UV_WRITABLE, on_writable);
  return 0;
}

/* Starts the next address that can start, then the timer for the one
 * after; with nothing left to start and nothing connecting, the race is
 * lost. */
static void try_next(csc1__race *race) {
  while (race->next < race->n) {
    attempt *a = &race->slot[race->next++];
    int err = attempt_start(race, a, race->delay.loop);
    if (err == 0) {
      if (race->next < race->n)
        uv_timer_start(&race->delay, on_delay, race->delay_ms, 0);
      return;
    }
    race->last_err = err;
  }
  if (race->live == 0)
    finish(race, -1, race->last_err ? race->last_err : UV_ECONNREFUSED);
}

static void on_delay(uv_timer_t *t) { try_next(t->data); }

/* The slots, in base_he_order's order, ports set. */
static void fill_slots(csc1__race *race, const csc1__race_opts *o) {
  sa_family_t families[CSC1_RACE_ADDRS_MAX];
  size_t order[CSC1_RACE_ADDRS_MAX];
  for (size_t i = 0; i < race->n; i++)
    families[i] = o->addrs[i].ss_family;
  base_he_order(families, race->n, order);
  for (size_t i = 0; i < race->n; i++) {
    attempt *a = &race->slot[i];
    a->race = race;
    a->fd = -1;
    a->addr = o->addrs[order[i]];
    if (a->addr.ss_family == AF_INET6)
      ((struct sockaddr_in6 *)&a->addr)->sin6_port = htons(o->port);
    else
      ((struct sockaddr_in *)&a->addr)->sin_port = htons(o->port);
  }
}

csc1__race *csc1__race_start(uv_loop_t *loop, const csc1__race_opts *o, csc1__race_cb cb,
                             void *arg) {
  size_t n = o->n < CSC1_RACE_ADDRS_MAX ? o->n : CSC1_RACE_ADDRS_MAX;
  csc1__race *race = calloc(1, sizeof(*race) + n * sizeof(attempt));
  if (!race)
    return NULL;
  race->cb = cb;
  race->arg = arg;
  race->delay_ms = o->attempt_delay_ms;
  race->setup = o->setup;
  race->setup_arg = o->setup_arg;
  race->n = n;
  fill_slots(race, o);
  uv_timer_init(loop, &race->delay);
  race->delay.data = race;
  race->handles = 1;
  uv_timer_start(&race->delay, on_delay, 0, 0); /* the first attempt, from the loop */
  return race;
}

void csc1__race_cancel(csc1__race *race) {
  if (race)
    release(race);
}
