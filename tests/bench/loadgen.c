/* mcgw_loadgen: the load generator and upstream servers behind `make bench`.
 *
 *   mcgw_loadgen upstream [--listen 127.0.0.1]
 *       Three loopback listeners (echo, sink, source) on free ports, printed as
 *       "PORTS echo=E sink=S source=O fake=F". echo: every byte back. sink: reads
 *       "<count>\n" and then that many bytes, and answers "<count>\n". source:
 *       reads "<count>\n" and sends that many bytes. Neither relies on a
 *       half-close, which Squid and tinyproxy turn into a full close.
 *       fake: answers any request head with 200, then echoes (a stand-in
 *       proxy that costs nothing: the ceiling the load generator reaches).
 *   mcgw_loadgen setup --proxy H:P --target H:P [-c 50] [-d SECS | -n COUNT]
 *                      [--warmup SECS]
 *       Tunnel set-up rate: each tunnel is TCP connect, CONNECT, 200, a 1-byte
 *       echo, close; -c tunnels in flight. Latency = connect start to echo byte.
 *   mcgw_loadgen hold --proxy H:P --target H:P -n N [-c 200] [--steps A,B,..]
 *                     [--pause SECS] [--hold-secs SECS]
 *       Opens N tunnels (-c at a time), each verified with a 1-byte echo, and
 *       keeps them open. At each step it prints "LEVEL ..." and waits for
 *       SIGUSR1 (or --pause seconds); after N it prints "HELD ..." and waits for
 *       SIGUSR1/SIGINT/SIGTERM (or --hold-secs), then closes them all.
 *   mcgw_loadgen bulk --proxy H:P --target H:P --bytes B [--dir up|down]
 *       One tunnel to the sink (up) or source (down); the byte count is checked
 *       at the receiving end. Time: first payload byte sent to last received
 *       (up: until the sink's answer, so every byte has crossed).
 *   mcgw_loadgen h2 bulk|hold ...
 *       HTTP/2 CONNECT streams over TLS to mcgw's listen_tls: loadgen_h2.c.
 *
 * Every result is one line starting with "RESULT " of key=value pairs, so the
 * bench script can parse it. Exit status: 0 when every tunnel succeeded,
 * 1 when any failed, 2 on a usage error. Only numeric addresses are taken,
 * and the script passes loopback ones only.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "loadgen.h"

#define HEAD_MAX 511
#define SCRATCH_SIZE (256 * 1024)
#define WRITE_HIGH (1024 * 1024) /* keep at most this much queued per socket */
#define CHECK_MS 250
#define BULK_MAX_MS (120 * 1000) /* a bulk transfer that takes longer has failed */

/* ---------------------------------------------------------------- options */

typedef enum { M_UPSTREAM, M_SETUP, M_HOLD, M_BULK } run_mode;

typedef struct {
  run_mode mode;
  struct sockaddr_storage proxy;
  char target[80];
  const char *listen_host;
  unsigned concurrency;
  double duration_s;
  double warmup_s;
  uint64_t count;
  uint64_t bytes;
  int dir_down;
  uint64_t steps[64];
  size_t n_steps;
  double pause_s;
  double hold_s;
  double timeout_s;
} options;

static options opt;
static uv_loop_t *loop;
static char scratch[SCRATCH_SIZE]; /* read buffer and payload source, loop thread only */

static void usage(void) {
  fprintf(stderr,
          "usage: mcgw_loadgen upstream [--listen 127.0.0.1]\n"
          "       mcgw_loadgen setup --proxy H:P --target H:P [-c N] [-d SECS | -n COUNT] "
          "[--warmup SECS] [--timeout SECS]\n"
          "       mcgw_loadgen hold  --proxy H:P --target H:P -n N [-c N] [--steps A,B,...] "
          "[--pause SECS] [--hold-secs SECS]\n"
          "       mcgw_loadgen bulk  --proxy H:P --target H:P --bytes B [--dir up|down]\n"
          "       mcgw_loadgen h2 bulk|hold ...  (HTTP/2 over TLS; see loadgen_h2.c)\n");
}

static int parse_addr(const char *s, struct sockaddr_storage *out) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(host))
    return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port <= 0 || port > 65535)
    return -1;
  memset(out, 0, sizeof(*out));
  if (host[0] == '[') {
    size_t n = strlen(host);
    if (n < 3 || host[n - 1] != ']')
      return -1;
    host[n - 1] = '\0';
    return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) == 0 ? 0 : -1;
  }
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 ? 0 : -1;
}

int lg_parse_steps(const char *s, uint64_t *steps, size_t *n, size_t cap) {
  while (*s && *n < cap) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || v == 0 || (*end && *end != ','))
      return -1;
    steps[(*n)++] = v;
    s = *end == ',' ? end + 1 : end;
  }
  return *s ? -1 : 0;
}

void lg_next_level(const uint64_t *steps, size_t n, size_t *next, uint64_t *target,
                   uint64_t total) {
  while (*next < n && steps[*next] <= *target)
    (*next)++;
  *target = *next < n && steps[*next] < total ? steps[(*next)++] : total;
}

static void levels_signal(lg_levels *l, int signum) {
  if (signum == SIGUSR1 && l->target < l->total) {
    if (!l->paused)
      return;
    l->paused = 0;
    lg_levels_next(l);
    l->go_on();
    return;
  }
  l->finish();
}

static void on_levels_signal(uv_signal_t *s, int signum) { levels_signal(s->data, signum); }
static void on_levels_timer(uv_timer_t *t) { levels_signal(t->data, SIGUSR1); }

void lg_levels_init(lg_levels *l, uv_loop_t *lp) {
  uv_timer_init(lp, &l->timer);
  uv_signal_init(lp, &l->sig_usr1);
  uv_signal_init(lp, &l->sig_int);
  uv_signal_init(lp, &l->sig_term);
  l->timer.data = l->sig_usr1.data = l->sig_int.data = l->sig_term.data = l;
}

void lg_levels_start(lg_levels *l) {
  uv_signal_start(&l->sig_usr1, on_levels_signal, SIGUSR1);
  uv_signal_start(&l->sig_int, on_levels_signal, SIGINT);
  uv_signal_start(&l->sig_term, on_levels_signal, SIGTERM);
}

void lg_levels_next(lg_levels *l) {
  lg_next_level(l->steps, l->n_steps, &l->next, &l->target, l->total);
}

void lg_levels_reached(lg_levels *l) {
  l->paused = 1;
  int last = l->target == l->total;
  l->report(last ? "HELD" : "LEVEL");
  double wait = last ? l->hold_s : l->pause_s;
  if (wait > 0)
    uv_timer_start(&l->timer, on_levels_timer, (uint64_t)(wait * 1000), 0);
}

void lg_levels_close(lg_levels *l, void (*close_handle)(uv_handle_t *h)) {
  close_handle((uv_handle_t *)&l->timer);
  close_handle((uv_handle_t *)&l->sig_usr1);
  close_handle((uv_handle_t *)&l->sig_int);
  close_handle((uv_handle_t *)&l->sig_term);
}

static int parse_mode(const char *m) {
  if (strcmp(m, "upstream") == 0)
    opt.mode = M_UPSTREAM;
  else if (strcmp(m, "setup") == 0)
    opt.mode = M_SETUP;
  else if (strcmp(m, "hold") == 0)
    opt.mode = M_HOLD;
  else if (strcmp(m, "bulk") == 0)
    opt.mode = M_BULK;
  else
    return -1;
  return 0;
}

/* Returns 0, or -1 after printing what is wrong. */
static int parse_args(int argc, char **argv) {
  opt.listen_host = "127.0.0.1";
  opt.concurrency = 50;
  opt.timeout_s = 10;
  int have_proxy = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0;
    if (!v) {
      fprintf(stderr, "loadgen: %s needs a value\n", a);
      return -1;
    }
    if (strcmp(a, "--proxy") == 0)
      bad = parse_addr(v, &opt.proxy), have_proxy = 1;
    else if (strcmp(a, "--target") == 0)
      bad = snprintf(opt.target, sizeof(opt.target), "%s", v) >= (int)sizeof(opt.target);
    else if (strcmp(a, "--listen") == 0)
      opt.listen_host = v;
    else if (strcmp(a, "-c") == 0)
      bad = (opt.concurrency = (unsigned)strtoul(v, NULL, 10)) == 0;
    else if (strcmp(a, "-d") == 0)
      bad = (opt.duration_s = strtod(v, NULL)) <= 0;
    else if (strcmp(a, "-n") == 0)
      bad = (opt.count = strtoull(v, NULL, 10)) == 0;
    else if (strcmp(a, "--warmup") == 0)
      opt.warmup_s = strtod(v, NULL);
    else if (strcmp(a, "--timeout") == 0)
      bad = (opt.timeout_s = strtod(v, NULL)) <= 0;
    else if (strcmp(a, "--bytes") == 0)
      bad = (opt.bytes = strtoull(v, NULL, 10)) == 0;
    else if (strcmp(a, "--dir") == 0)
      bad = !(strcmp(v, "up") == 0 || (opt.dir_down = strcmp(v, "down") == 0));
    else if (strcmp(a, "--steps") == 0)
      bad = lg_parse_steps(v, opt.steps, &opt.n_steps, sizeof(opt.steps) / sizeof(opt.steps[0]));
    else if (strcmp(a, "--pause") == 0)
      opt.pause_s = strtod(v, NULL);
    else if (strcmp(a, "--hold-secs") == 0)
      opt.hold_s = strtod(v, NULL);
    else {
      fprintf(stderr, "loadgen: unknown option %s\n", a);
      return -1;
    }
    if (bad) {
      fprintf(stderr, "loadgen: bad value for %s: %s\n", a, v);
      return -1;
    }
    i++;
  }
  if (opt.mode == M_UPSTREAM)
    return 0;
  if (!have_proxy || !opt.target[0]) {
    fprintf(stderr, "loadgen: --proxy and --target are required\n");
    return -1;
  }
  if (opt.mode == M_SETUP && !opt.count && opt.duration_s <= 0)
    opt.duration_s = 5;
  if (opt.mode == M_HOLD && !opt.count) {
    fprintf(stderr, "loadgen: hold needs -n\n");
    return -1;
  }
  if (opt.mode == M_BULK && !opt.bytes)
    opt.bytes = 1ull << 30;
  return 0;
}

/* Raises RLIMIT_NOFILE to the hard limit; returns the soft limit in force. */
static rlim_t raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static void alloc_scratch(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void free_on_close(uv_handle_t *h) { free(h->data); }

/* Writes len bytes of p (copied if they cannot all go out at once). Returns
 * 0 or a libuv error. */
typedef struct {
  uv_write_t req;
  char data[];
} copy_write;

static void on_copy_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static int write_copy(uv_stream_t *s, const char *p, size_t len) {
  size_t off = 0;
  if (s->write_queue_size == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int n = uv_try_write(s, &b, 1);
    if (n < 0 && n != UV_EAGAIN)
      return n;
    off = n > 0 ? (size_t)n : 0;
  }
  if (off == len)
    return 0;
  copy_write *w = malloc(sizeof(*w) + len - off);
  if (!w)
    return UV_ENOMEM;
  memcpy(w->data, p + off, len - off);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)(len - off));
  int err = uv_write(&w->req, s, &b, 1, on_copy_written);
  if (err)
    free(w);
  return err;
}

/* --------------------------------------------------------------- upstream */

typedef enum { U_ECHO, U_SINK, U_SOURCE, U_FAKE, U_KINDS_ } ukind;

typedef struct {
  uv_tcp_t tcp;
  ukind kind;
  int have_line;      /* sink, source: the "<count>\n" line has been read */
  uint64_t count;     /* sink: bytes still expected; source: bytes left to send */
  uint64_t total;     /* the requested count */
  char line[64];       /* the count line; for the fake proxy, the request line */
  size_t line_len;
  uint32_t head_state; /* fake proxy: the last four bytes of the request head */
} upeer;

static int upstream_ports[U_KINDS_];

typedef struct {
  uv_tcp_t tcp;
  ukind kind;
} ulistener;

static void upeer_close(upeer *p) {
  if (!uv_is_closing((uv_handle_t *)&p->tcp))
    uv_close((uv_handle_t *)&p->tcp, free_on_close);
}

static void source_pump(upeer *p);

static void on_source_written(uv_write_t *req, int status) {
  upeer *p = req->data;
  free(req);
  if (status < 0 || uv_is_closing((uv_handle_t *)&p->tcp))
    return;
  source_pump(p);
}

/* Keeps up to WRITE_HIGH bytes queued until count bytes are out. The client
 * closes when it has them all. */
static void source_pump(upeer *p) {
  uv_stream_t *s = (uv_stream_t *)&p->tcp;
  while (p->count && s->write_queue_size < WRITE_HIGH) {
    size_t n = p->count < SCRATCH_SIZE ? (size_t)p->count : SCRATCH_SIZE;
    uv_write_t *req = malloc(sizeof(*req));
    uv_buf_t b = uv_buf_init(scratch, (unsigned)n);
    if (!req || uv_write(req, s, &b, 1, on_source_written) != 0) {
      free(req);
      upeer_close(p);
      return;
    }
    req->data = p;
    p->count -= n;
  }
}

/* Consumes the "<count>\n" line; returns how many bytes of d it used, or
 * -1 for a malformed line. */
static ssize_t read_count_line(upeer *p, const char *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (d[i] == '\n') {
      p->line[p->line_len] = '\0';
      p->total = p->count = strtoull(p->line, NULL, 10);
      p->have_line = 1;
      return (ssize_t)i + 1;
    }
    if (p->line_len + 1 >= sizeof(p->line))
      return -1;
    p->line[p->line_len++] = d[i];
  }
  return (ssize_t)n;
}

/* The fake proxy answers any request head with 200 and then becomes the
 * upstream the CONNECT target's port names (echo when it names none): a
 * stand-in proxy that costs nothing, so the ceiling of what the load
 * generator can drive on this machine. */
static int fake_head(upeer *p, const char **d, size_t *n) {
  static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
  for (size_t i = 0; i < *n; i++) {
    uint8_t c = (uint8_t)(*d)[i];
    p->head_state = (p->head_state << 8) | c;
    if (!p->have_line) { /* keep the request line */
      if (c == '\r' || c == '\n')
        p->have_line = 1;
      else if (p->line_len + 1 < sizeof(p->line))
        p->line[p->line_len++] = (char)c;
    }
    if (p->head_state != 0x0d0a0d0a)
      continue;
    p->line[p->line_len] = '\0';
    p->have_line = 0;
    const char *colon = strrchr(p->line, ':');
    int port = colon ? atoi(colon + 1) : 0;
    p->kind = port == upstream_ports[U_SINK] ? U_SINK
              : port == upstream_ports[U_SOURCE] ? U_SOURCE : U_ECHO;
    p->line_len = 0;
    *d += i + 1;
    *n -= i + 1;
    return write_copy((uv_stream_t *)&p->tcp, ok, sizeof(ok) - 1);
  }
  *n = 0;
  return 0;
}

static void on_upeer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  upeer *p = s->data;
  if (nread < 0) {
    upeer_close(p);
    return;
  }
  const char *d = buf->base;
  size_t n = (size_t)nread;
  if (p->kind == U_FAKE && fake_head(p, &d, &n) != 0) {
    upeer_close(p);
    return;
  }
  if (p->kind == U_FAKE)
    return;
  if (p->kind == U_ECHO) {
    if (write_copy(s, d, n) != 0)
      upeer_close(p);
    return;
  }
  if (!p->have_line) {
    ssize_t used = read_count_line(p, d, n);
    if (used < 0) {
      upeer_close(p);
      return;
    }
    d += used;
    n -= (size_t)used;
    if (!p->have_line)
      return;
    if (p->kind == U_SOURCE) {
      source_pump(p);
      return;
    }
  }
  if (p->kind == U_SOURCE || n > p->count) {
    upeer_close(p); /* nothing more is expected: the client is confused */
    return;
  }
  p->count -= n;
  if (p->count == 0) {
    char reply[24];
    int len = snprintf(reply, sizeof(reply), "%" PRIu64 "\n", p->total);
    if (write_copy(s, reply, (size_t)len) != 0)
      upeer_close(p);
  }
}

static void on_upstream_conn(uv_stream_t *server, int status) {
  ulistener *l = server->data;
  if (status < 0) {
    fprintf(stderr, "upstream: accept: %s\n", uv_strerror(status));
    return;
  }
  upeer *p = calloc(1, sizeof(*p));
  if (!p)
    return;
  p->kind = l->kind;
  uv_tcp_init(loop, &p->tcp);
  p->tcp.data = p;
  if (uv_accept(server, (uv_stream_t *)&p->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&p->tcp, alloc_scratch, on_upeer_read) != 0)
    upeer_close(p);
}

static int upstream_listen(ulistener *l, ukind kind, int *port) {
  struct sockaddr_storage ss;
  int err = uv_ip4_addr(opt.listen_host, 0, (struct sockaddr_in *)&ss);
  if (err)
    err = uv_ip6_addr(opt.listen_host, 0, (struct sockaddr_in6 *)&ss);
  if (err)
    return err;
  l->kind = kind;
  uv_tcp_init(loop, &l->tcp);
  l->tcp.data = l;
  if ((err = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
      (err = uv_listen((uv_stream_t *)&l->tcp, 4096, on_upstream_conn)) != 0)
    return err;
  int len = sizeof(ss);
  uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
  *port = ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same offset in sockaddr_in6 */
  return 0;
}

static uv_signal_t stop_sig[2];

static void on_upstream_stop(uv_signal_t *s, int signum) {
  (void)signum;
  (void)s;
  uv_stop(loop);
}

static int run_upstream(void) {
  static ulistener ls[U_KINDS_];
  int *ports = upstream_ports, err = 0;
  for (int k = 0; k < U_KINDS_ && !err; k++)
    err = upstream_listen(&ls[k], (ukind)k, &ports[k]);
  if (err) {
    fprintf(stderr, "upstream: listen on %s: %s\n", opt.listen_host, uv_strerror(err));
    return 1;
  }
  uv_signal_init(loop, &stop_sig[0]);
  uv_signal_init(loop, &stop_sig[1]);
  uv_signal_start(&stop_sig[0], on_upstream_stop, SIGTERM);
  uv_signal_start(&stop_sig[1], on_upstream_stop, SIGINT);
  printf("PORTS echo=%d sink=%d source=%d fake=%d\n", ports[U_ECHO], ports[U_SINK],
         ports[U_SOURCE], ports[U_FAKE]);
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

/* ----------------------------------------------------------------- client */

typedef enum {
  F_CONNECT, F_WRITE, F_STATUS, F_HEAD, F_EOF, F_RESET, F_ECHO, F_TIMEOUT, F_BULK, F_COUNT_
} failure;

static const char *const failure_names[F_COUNT_] = {
    "connect", "write", "status", "head", "eof", "reset", "echo", "timeout", "bulk"};

typedef enum { C_IDLE, C_CONNECTING, C_HEAD, C_ECHO, C_HELD, C_BULK, C_CLOSING } cstate;

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uint64_t t0_ns;
  uint64_t deadline_ms;
  uint32_t idx;
  cstate state;
  uint16_t head_len;
  char head[HEAD_MAX + 1];
} client;

static struct {
  client *clients;
  size_t n_clients;
  char request[160];
  size_t request_len;
  uint64_t started, ok, failed, dropped;
  uint64_t fail_by[F_COUNT_];
  int first_status_logged;
  uint32_t *lat_us;
  size_t n_lat, cap_lat;
  double t_start, t_measure, t_stop;
  uint64_t ok_in_window;
  uint64_t in_setup;
  lg_levels lv;
  int finishing;
  uv_timer_t check;
  /* bulk */
  uint64_t bulk_left, bulk_got;
  double bulk_t0, bulk_t1;
  int bulk_ok;
} g;

static void client_start(client *c);
static void hold_progress(void);
static void finish_all(void);

static void record_latency(uint64_t us) {
  if (g.n_lat == g.cap_lat) {
    size_t cap = g.cap_lat ? g.cap_lat * 2 : 65536;
    uint32_t *p = realloc(g.lat_us, cap * sizeof(*p));
    if (!p)
      return;
    g.lat_us = p;
    g.cap_lat = cap;
  }
  g.lat_us[g.n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Setup mode: a slot whose tunnel has closed starts the next while the run
 * lasts. Hold mode: opening continues up to the current level. */
static void on_client_closed(uv_handle_t *h) {
  client *c = h->data;
  c->state = C_IDLE;
  if (opt.mode == M_SETUP) {
    int more = opt.count ? g.started < opt.count : now_s() < g.t_stop;
    if (more && !g.finishing) {
      client_start(c);
      return;
    }
    g.in_setup--;
    if (g.in_setup == 0)
      finish_all();
  }
}

static void client_close(client *c) {
  if (c->state == C_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  c->state = C_CLOSING;
  uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void client_fail(client *c, failure f) {
  if (c->state == C_HELD) {
    g.dropped++;
  } else {
    g.failed++;
    g.fail_by[f]++;
    if (opt.mode == M_HOLD)
      g.in_setup--;
  }
  client_close(c);
  if (opt.mode == M_HOLD)
    hold_progress();
  else if (opt.mode == M_BULK)
    finish_all();
}

static const char echo_byte[1] = {'e'};

static void client_established(client *c);

/* The status line is complete: only 200 opens the tunnel. */
static int status_ok(client *c) {
  if (c->head_len >= 12 && strncmp(c->head, "HTTP/1.", 7) == 0 &&
      strncmp(c->head + 8, " 200", 4) == 0)
    return 1;
  if (!g.first_status_logged++) {
    char *eol = strchr(c->head, '\r');
    fprintf(stderr, "loadgen: proxy answered: %.*s\n", (int)(eol ? eol - c->head : c->head_len),
            c->head);
  }
  return 0;
}

/* The response head is in c->head: nothing after it is expected, since the
 * upstream has not been sent anything yet. */
static void head_complete(client *c, size_t head_end) {
  if (head_end != c->head_len) {
    client_fail(c, F_HEAD);
    return;
  }
  if (opt.mode == M_BULK) {
    client_established(c);
    return;
  }
  c->state = C_ECHO;
  if (write_copy((uv_stream_t *)&c->tcp, echo_byte, 1) != 0)
    client_fail(c, F_WRITE);
}

static void on_head_bytes(client *c, const char *d, size_t n) {
  size_t room = HEAD_MAX - c->head_len;
  memcpy(c->head + c->head_len, d, n < room ? n : room);
  c->head_len = (uint16_t)(c->head_len + (n < room ? n : room));
  c->head[c->head_len] = '\0';
  if (strstr(c->head, "\r\n") && !status_ok(c)) {
    client_fail(c, F_STATUS);
    return;
  }
  char *end = strstr(c->head, "\r\n\r\n");
  if (end)
    head_complete(c, (size_t)(end + 4 - c->head));
  else if (n >= room)
    client_fail(c, F_HEAD);
}

static void on_echo(client *c, const char *d, size_t n) {
  if (n != 1 || d[0] != echo_byte[0]) {
    client_fail(c, F_ECHO);
    return;
  }
  uint64_t t1 = uv_hrtime();
  g.ok++;
  if (opt.mode == M_SETUP) {
    double t = (double)t1 / 1e9;
    if (t >= g.t_measure && (opt.count || t <= g.t_stop)) {
      g.ok_in_window++;
      record_latency((t1 - c->t0_ns) / 1000);
    }
    client_close(c);
    return;
  }
  record_latency((t1 - c->t0_ns) / 1000);
  c->state = C_HELD;
  g.in_setup--;
  hold_progress();
}

static void bulk_data(client *c, const char *d, size_t n);

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  client *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    client_fail(c, nread == UV_EOF ? F_EOF : F_RESET);
    return;
  }
  switch (c->state) {
  case C_HEAD:
    on_head_bytes(c, buf->base, (size_t)nread);
    return;
  case C_ECHO:
    on_echo(c, buf->base, (size_t)nread);
    return;
  case C_BULK:
    bulk_data(c, buf->base, (size_t)nread);
    return;
  default:
    client_fail(c, F_ECHO); /* bytes on an idle tunnel */
    return;
  }
}

static void on_client_connected(uv_connect_t *req, int status) {
  client *c = req->data;
  if (status == UV_ECANCELED)
    return;
  if (status < 0) {
    client_fail(c, F_CONNECT);
    return;
  }
  c->state = C_HEAD;
  uv_stream_t *s = (uv_stream_t *)&c->tcp;
  if (write_copy(s, g.request, g.request_len) != 0) {
    client_fail(c, F_WRITE);
    return;
  }
  if (uv_read_start(s, alloc_scratch, on_client_read) != 0)
    client_fail(c, F_RESET);
}

static void client_start(client *c) {
  memset(&c->tcp, 0, sizeof(c->tcp));
  c->head_len = 0;
  c->state = C_CONNECTING;
  c->t0_ns = uv_hrtime();
  c->deadline_ms = uv_now(loop) + (uint64_t)(opt.timeout_s * 1000);
  g.started++;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->creq.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  int err = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&opt.proxy, on_client_connected);
  if (err) {
    if (!g.fail_by[F_CONNECT])
      fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(err));
    client_fail(c, F_CONNECT);
  }
}

/* Set-up deadlines for every client not yet established, and the bulk
 * transfer's. */
static void on_check(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_now(loop);
  for (size_t i = 0; i < g.n_clients; i++) {
    client *c = &g.clients[i];
    if ((c->state == C_CONNECTING || c->state == C_HEAD || c->state == C_ECHO ||
         c->state == C_BULK) &&
        now >= c->deadline_ms)
      client_fail(c, F_TIMEOUT);
  }
}

static void print_failures(void) {
  for (int f = 0; f < F_COUNT_; f++)
    if (g.fail_by[f])
      printf(" fail_%s=%" PRIu64, failure_names[f], g.fail_by[f]);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static uint32_t pct(double p) {
  if (!g.n_lat)
    return 0;
  size_t i = (size_t)(p / 100.0 * (double)(g.n_lat - 1) + 0.5);
  return g.lat_us[i];
}

/* Own CPU use: tells whether the load generator itself was the limit. */
static double own_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void print_latency(void) {
  if (g.n_lat) /* no tunnel succeeded: lat_us is still NULL */
    qsort(g.lat_us, g.n_lat, sizeof(*g.lat_us), cmp_u32);
  printf(" p50_us=%u p90_us=%u p99_us=%u p999_us=%u max_us=%u", pct(50), pct(90), pct(99),
         pct(99.9), g.n_lat ? g.lat_us[g.n_lat - 1] : 0);
}

static void report_setup(void) {
  double end = opt.count ? now_s() : g.t_stop;
  double secs = end - g.t_measure;
  printf("RESULT mode=setup concurrency=%u ok=%" PRIu64 " failed=%" PRIu64
         " measured=%" PRIu64 " secs=%.3f rate=%.1f",
         opt.concurrency, g.ok, g.failed, g.ok_in_window, secs,
         secs > 0 ? (double)g.ok_in_window / secs : 0.0);
  print_latency();
  print_failures();
  printf(" loadgen_cpu=%.2f\n", own_cpu_s() / (now_s() - g.t_start));
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Ends the run: reports, closes every handle, and lets uv_run return. */
static void finish_all(void) {
  if (g.finishing == 2)
    return;
  g.finishing = 2;
  if (opt.mode == M_SETUP)
    report_setup();
  close_handle((uv_handle_t *)&g.check);
  lg_levels_close(&g.lv, close_handle);
  for (size_t i = 0; i < g.n_clients; i++)
    if (g.clients[i].state != C_IDLE)
      client_close(&g.clients[i]);
  fflush(stdout);
}

static void build_request(void) {
  g.request_len = (size_t)snprintf(g.request, sizeof(g.request),
                                   "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", opt.target,
                                   opt.target);
}

static void init_client_run(size_t n_clients) {
  build_request();
  g.n_clients = n_clients;
  g.clients = calloc(n_clients, sizeof(*g.clients));
  if (!g.clients) {
    fprintf(stderr, "loadgen: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n_clients; i++)
    g.clients[i].idx = (uint32_t)i;
  uv_timer_init(loop, &g.check);
  uv_timer_start(&g.check, on_check, CHECK_MS, CHECK_MS);
  lg_levels_init(&g.lv, loop);
  g.t_start = now_s();
}

static int run_setup(void) {
  unsigned n = opt.concurrency;
  if (opt.count && opt.count < n)
    n = (unsigned)opt.count;
  init_client_run(n);
  g.t_measure = g.t_start + opt.warmup_s;
  g.t_stop = g.t_start + opt.warmup_s + opt.duration_s;
  g.in_setup = n;
  for (unsigned i = 0; i < n; i++)
    client_start(&g.clients[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  return g.failed ? 1 : 0;
}

/* ------------------------------------------------------------------- hold */

static void hold_open_more(void) {
  while (!g.lv.paused && !g.finishing && g.started < g.lv.target &&
         g.in_setup < opt.concurrency) {
    g.in_setup++;
    client_start(&g.clients[g.started]); /* started is the next index */
  }
}

static void hold_report(const char *what) {
  printf("%s n=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64 " dropped=%" PRIu64 " secs=%.3f",
         what, g.started, g.ok, g.failed, g.dropped, now_s() - g.t_start);
  print_failures();
  printf("\n");
  fflush(stdout);
}

/* A level is complete when every tunnel up to it has succeeded or failed. */
static void hold_progress(void) {
  if (g.finishing || g.lv.paused)
    return;
  if (g.started == g.lv.target && g.in_setup == 0) {
    lg_levels_reached(&g.lv);
    return;
  }
  hold_open_more();
}

static void hold_finish(void) {
  g.finishing = 1;
  hold_report("RESULT mode=hold");
  finish_all();
}

static int run_hold(void) {
  rlim_t lim = raise_nofile();
  if (lim && opt.count + 16 > lim)
    fprintf(stderr, "loadgen: RLIMIT_NOFILE %llu is too low for %" PRIu64 " tunnels\n",
            (unsigned long long)lim, opt.count);
  init_client_run(opt.count);
  g.lv.steps = opt.steps;
  g.lv.n_steps = opt.n_steps;
  g.lv.total = opt.count;
  g.lv.pause_s = opt.pause_s;
  g.lv.hold_s = opt.hold_s;
  g.lv.report = hold_report;
  g.lv.go_on = hold_open_more;
  g.lv.finish = hold_finish;
  lg_levels_start(&g.lv);
  lg_levels_next(&g.lv);
  hold_open_more();
  uv_run(loop, UV_RUN_DEFAULT);
  return g.failed || g.dropped ? 1 : 0;
}

/* ------------------------------------------------------------------- bulk */

static void bulk_pump(client *c);

static void on_bulk_written(uv_write_t *req, int status) {
  client *c = req->data;
  free(req);
  if (status < 0 || c->state != C_BULK)
    return;
  bulk_pump(c);
}

/* Upload: keeps WRITE_HIGH bytes queued until every byte is out. */
static void bulk_pump(client *c) {
  uv_stream_t *s = (uv_stream_t *)&c->tcp;
  while (g.bulk_left && s->write_queue_size < WRITE_HIGH) {
    size_t n = g.bulk_left < SCRATCH_SIZE ? (size_t)g.bulk_left : SCRATCH_SIZE;
    uv_write_t *req = malloc(sizeof(*req));
    uv_buf_t b = uv_buf_init(scratch, (unsigned)n);
    if (!req || uv_write(req, s, &b, 1, on_bulk_written) != 0) {
      free(req);
      client_fail(c, F_WRITE);
      return;
    }
    req->data = c;
    g.bulk_left -= n;
  }
}

/* Tunnel open: ask the sink or source for opt.bytes, and start the clock. */
static void client_established(client *c) {
  char line[32];
  int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", opt.bytes);
  c->state = C_BULK;
  c->head_len = 0;
  c->deadline_ms = uv_now(loop) + BULK_MAX_MS;
  g.bulk_t0 = now_s();
  if (write_copy((uv_stream_t *)&c->tcp, line, (size_t)n) != 0) {
    client_fail(c, F_WRITE);
    return;
  }
  if (!opt.dir_down) {
    g.bulk_left = opt.bytes;
    bulk_pump(c);
  }
}

/* Download: counts bytes up to opt.bytes. Upload: the sink's "<count>\n". */
static void bulk_data(client *c, const char *d, size_t n) {
  if (opt.dir_down) {
    g.bulk_got += n;
    if (g.bulk_got < opt.bytes)
      return;
  } else {
    if (c->head_len + n > HEAD_MAX) {
      client_fail(c, F_BULK);
      return;
    }
    memcpy(c->head + c->head_len, d, n);
    c->head_len = (uint16_t)(c->head_len + n);
    c->head[c->head_len] = '\0';
    if (!strchr(c->head, '\n'))
      return;
    g.bulk_got = strtoull(c->head, NULL, 10);
  }
  g.bulk_t1 = now_s();
  if (g.bulk_got != opt.bytes) {
    client_fail(c, F_BULK);
    return;
  }
  g.bulk_ok = 1;
  g.ok++;
  client_close(c);
  finish_all();
}

static int run_bulk(void) {
  init_client_run(1);
  client_start(&g.clients[0]);
  uv_run(loop, UV_RUN_DEFAULT);
  double secs = g.bulk_t1 - g.bulk_t0;
  printf("RESULT mode=bulk dir=%s bytes=%" PRIu64 " ok=%d secs=%.3f gbit_s=%.3f mib_s=%.1f",
         opt.dir_down ? "down" : "up", g.bulk_got, g.bulk_ok, secs,
         g.bulk_ok && secs > 0 ? (double)opt.bytes * 8 / secs / 1e9 : 0.0,
         g.bulk_ok && secs > 0 ? (double)opt.bytes / secs / 1048576.0 : 0.0);
  print_failures();
  printf(" loadgen_cpu=%.2f\n", own_cpu_s() / (now_s() - g.t_start));
  return g.bulk_ok ? 0 : 1;
}

/* ------------------------------------------------------------------- main */

int main(int argc, char **argv) {
  if (argc < 2) {
    usage();
    return 2;
  }
  if (strcmp(argv[1], "h2") == 0) {
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    int rc = lg_h2_main(argc, argv, uv_default_loop());
    fflush(stdout);
    return rc;
  }
  if (parse_mode(argv[1]) != 0 || parse_args(argc, argv) != 0) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  loop = uv_default_loop();
  int rc;
  switch (opt.mode) {
  case M_UPSTREAM:
    rc = run_upstream();
    break;
  case M_SETUP:
    rc = run_setup();
    break;
  case M_HOLD:
    rc = run_hold();
    break;
  default:
    rc = run_bulk();
  }
  fflush(stdout);
  return rc;
}
