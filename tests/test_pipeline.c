/* test_pipeline.c: the pipeline-file parser (tools/msdpipe/pipefile_*.c): good files expand and
 * resolve as documented in docs/PIPELINES.md, bad ones give "FILE:LINE: message" plus the
 * line, endpoints are planned right, and random or mutated input never crashes it. */
#include "check.h"
#include "pipefile.h"

#include <stdint.h>
#include <stdlib.h>

static char err[16384];

static int parse(Pipeline *pl, const char *text, int nsets, char **sets) {
    return pipeline_parse(pl, "t.pipe", text, strlen(text), nsets, sets, err, sizeof err);
}

static const PipeProc *proc(const Pipeline *pl, const char *name) {
    int i = pipeline_find_proc(pl, name);
    return i < 0 ? NULL : &pl->procs[i];
}

static void test_echo_like(void) {
    Pipeline pl;
    const char *text =
        "# the skeleton\n"
        "pipeline demo   # a name\n"
        "var K = 3\n"
        "var steps = 7\n"
        "proc data bind=serve\n"
        "proc teacher bind=serve gpu=0\n"
        "proc critic[k in 0..$K-1] bind=serve gpu=$k%2 restart=$K\n"
        "proc student[k in 0..$K-1] connect=data,teacher,critic=critic.$k -- --steps $steps --seed \"$k\"\n"
        "proc router connect=c=critic\n"
        "stdin = router\n";
    REQUIRE(parse(&pl, text, 0, NULL) == 0, "%s", err);
    CHECK(strcmp(pl.name, "demo") == 0, "name %s", pl.name);
    CHECK(pl.nprocs == 2 + 3 + 3 + 1, "nprocs %d", pl.nprocs);
    const PipeProc *s1 = proc(&pl, "student.1");
    REQUIRE(s1, "no student.1");
    CHECK(s1->index == 1 && strcmp(s1->group, "student") == 0 && strcmp(s1->role, "student") == 0, "student.1 fields");
    CHECK(!s1->server && s1->gpu == -1, "student.1 server %d gpu %d", s1->server, s1->gpu);
    CHECK(s1->argc == 4 && strcmp(s1->argv[1], "7") == 0 && strcmp(s1->argv[3], "1") == 0, "args");
    CHECK(s1->nconnects == 3, "student.1 connects %d", s1->nconnects);
    CHECK(strcmp(s1->connects[2].peer, "critic") == 0 &&
          strcmp(pl.procs[s1->connects[2].target].name, "critic.1") == 0, "alias critic=critic.$k");
    CHECK(proc(&pl, "critic.1")->gpu == 1 && proc(&pl, "critic.2")->gpu == 0, "gpu expressions");
    CHECK(proc(&pl, "teacher")->server == 1 && proc(&pl, "teacher")->gpu == 0, "teacher");
    CHECK(proc(&pl, "critic.2")->restart == 3 && proc(&pl, "teacher")->restart == 0, "restart=$K: %d, default %d",
          proc(&pl, "critic.2")->restart, proc(&pl, "teacher")->restart);
    const PipeProc *r = proc(&pl, "router");
    CHECK(r->nconnects == 3 && strcmp(r->connects[0].peer, "c.0") == 0 && strcmp(r->connects[2].peer, "c.2") == 0,
          "group connect with alias: %d", r->nconnects);
    CHECK(pl.stdin_proc == pipeline_find_proc(&pl, "router"), "stdin");
    CHECK(pl.ready_timeout == 10 && pl.stop_timeout == 5, "built-in timeouts");
    char perr[256];
    REQUIRE(pipeline_plan(&pl, "/run/x", NULL, NULL, perr, sizeof perr) == 0, "%s", perr);
    CHECK(strcmp(pipeline_connect_endpoint(&pl, &s1->connects[0]), "ipc:///run/x/data.serve") == 0, "%s",
          pipeline_connect_endpoint(&pl, &s1->connects[0]));
    CHECK(!pipeline_has_remote(&pl), "local only");
    pipeline_free(&pl);
}

static void test_sets_and_quotes(void) {
    Pipeline pl;
    char *sets[] = {"K=1", "msg=hi there", "ready_timeout=2.5"};
    const char *text =
        "var K = 4\n"
        "var msg = hello\n"
        "var both = \"$msg and $$5\"\n"
        "proc a[i in 0..$K-1] bind=serve -- '$not' \"x y\" $both z\\ w\n";
    REQUIRE(parse(&pl, text, 3, sets) == 0, "%s", err);
    CHECK(pl.nprocs == 1, "K=1 gives one replica, got %d", pl.nprocs);
    const PipeProc *a = &pl.procs[0];
    CHECK(strcmp(a->name, "a.0") == 0, "%s", a->name);
    REQUIRE(a->argc == 4, "argc %d", a->argc);
    CHECK(strcmp(a->argv[0], "$not") == 0, "single quotes: %s", a->argv[0]);
    CHECK(strcmp(a->argv[1], "x y") == 0, "double quotes: %s", a->argv[1]);
    CHECK(strcmp(a->argv[2], "hi there and $5") == 0, "substituted value not split: %s", a->argv[2]);
    CHECK(strcmp(a->argv[3], "z w") == 0, "backslash: %s", a->argv[3]);
    CHECK(pl.ready_timeout == 2.5, "ready_timeout %g", pl.ready_timeout);
    CHECK(strcmp(pipeline_var(&pl, "msg"), "hi there") == 0, "var msg");
    pipeline_free(&pl);
}

static int fake_port(const PipeHost *h, void *ctx, char *e, size_t elen) {
    int *next = ctx;
    return (*next)++;
}

static void test_hosts_and_tcp(void) {
    Pipeline pl;
    const char *text =
        "host gpu1 address=10.0.0.7 ports=20000-20001 bindir=/opt/msd/bin\n"
        "host localhost address=10.0.0.1\n"
        "proc teacher bind=serve,aux host=gpu1\n"
        "proc data bind=serve\n"
        "proc student connect=teacher,x=teacher:aux,data\n";
    REQUIRE(parse(&pl, text, 0, NULL) == 0, "%s", err);
    CHECK(pipeline_has_remote(&pl), "remote");
    int next = 5555;
    char perr[256];
    REQUIRE(pipeline_plan(&pl, "/r", fake_port, &next, perr, sizeof perr) == 0, "%s", perr);
    const PipeProc *t = proc(&pl, "teacher"), *s = proc(&pl, "student");
    CHECK(strcmp(t->binds[0].endpoint, "tcp://10.0.0.7:5555") == 0, "%s", t->binds[0].endpoint);
    CHECK(strcmp(t->binds[1].endpoint, "tcp://10.0.0.7:5556") == 0, "%s", t->binds[1].endpoint);
    CHECK(strcmp(proc(&pl, "data")->binds[0].endpoint, "ipc:///r/data.serve") == 0, "data stays ipc");
    CHECK(strcmp(s->connects[1].peer, "x") == 0 && s->connects[1].bind == 1, "endpoint by name");
    CHECK(strcmp(pl.hosts[t->host].bindir, "/opt/msd/bin") == 0 && pl.hosts[t->host].port_lo == 20000, "host fields");
    /* a run directory too long for a socket path is refused */
    char longdir[200];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    CHECK(pipeline_plan(&pl, longdir, fake_port, &next, perr, sizeof perr) < 0 && strstr(perr, "too long"), "%s", perr);
    pipeline_free(&pl);
}

/* Each bad file must fail with "t.pipe:LINE: " and a message containing `want`. */
static void test_bad_files(void) {
    static const struct { const char *text; int line; const char *want; } cases[] = {
        {"proc a bind=serve\nproc b connect=c\n", 2, "no process named 'c'"},
        {"var K = 2\nproc s[k in 0..$J] bind=serve\n", 2, "undefined variable 'J'"},
        {"proc a bind=serve wat=1\n", 1, "unknown proc key 'wat'"},
        {"proc a bind=serve\nproc a bind=serve\n", 2, "duplicate process name"},
        {"proc s[k in 0..2] bind=serve\nproc s bind=serve\n", 2, "duplicate process name"},
        {"proc s[k in 5..2] bind=serve\n", 1, "empty range"},
        {"proc s[k in 0..(2] bind=serve\n", 1, "missing ')'"},
        {"proc s[k in 0..2/0] bind=serve\n", 1, "division by zero"},
        {"proc s[k in -1..2] bind=serve\n", 1, "starts below 0"},
        {"var k = 1\nproc s[k in 0..2] bind=serve\n", 2, "hides the variable"},
        {"proc a bind=serve gpu=1.5\n", 1, "bad gpu"},
        {"proc a bind=serve gpu=64\n", 1, "bad gpu 64"},
        {"proc a bind=serve bind=x\n", 1, "bind given twice"},
        {"proc a bind=serve,serve\n", 1, "bound twice"},
        {"proc a bind=\n", 1, "empty bind= list"},
        {"proc a bind=a,,b\n", 1, "empty item"},
        {"proc a bind=serve\nproc b connect=a,a\n", 2, "connects twice"},
        {"host -oProxyCommand=x\n", 1, "bad host"},
        {"host ..\n", 1, "bad host"},
        {"host .hidden\n", 1, "bad host"},
        {"host far address=-x\n", 1, "bad address"},
        {"proc a bind=x,y\nproc b connect=a\n", 2, "binds several endpoints"},
        {"proc a bind=x\nproc b connect=a:y\n", 2, "does not bind an endpoint 'y'"},
        {"proc a bind=serve server=maybe\n", 1, "bad server"},
        {"proc a bind=serve restart=-1\n", 1, "bad restart -1 (expected the most restarts after a crash, 0..100)"},
        {"proc a bind=serve restart=101\n", 1, "bad restart 101"},
        {"proc a bind=serve restart=two\n", 1, "bad restart 'two'"},
        {"proc a bind=serve restart=1 restart=2\n", 1, "restart given twice"},
        {"proc a bind=serve threads=-1\n", 1, "bad threads -1 (expected the process's CPU threads, 1..64, or 0"},
        {"proc a bind=serve threads=65\n", 1, "bad threads 65"},
        {"proc a bind=serve threads=all\n", 1, "bad threads 'all'"},
        {"proc a bind=serve threads=\n", 1, "bad threads ''"},
        {"proc a bind=serve threads=1 threads=2\n", 1, "threads given twice"},
        {"proc a bind=serve cpus=3-1\n", 1, "bad cpus '3-1': the range 3-1 runs backwards"},
        {"proc a bind=serve cpus=1024\n", 1, "bad cpus '1024': CPU 1024 is beyond the largest CPU number, 1023"},
        {"proc a bind=serve cpus=0-99999999999999999999\n", 1, "is beyond the largest CPU number"},
        {"proc a bind=serve cpus=\n", 1, "bad cpus '' (expected CPU numbers and ranges"},
        {"proc a bind=serve cpus=0,\n", 1, "bad cpus '0,'"},
        {"proc a bind=serve cpus=-1\n", 1, "bad cpus '-1'"},
        {"proc a bind=serve cpus=1+1\n", 1, "bad cpus '1+1'"},
        {"proc a bind=serve cpus=all\n", 1, "bad cpus 'all'"},
        {"proc a bind=serve cpus=0 cpus=1\n", 1, "cpus given twice"},
        {"after g cpus=0 -- x\n", 1, "key 'cpus' is for processes"},
        {"proc a bind=serve\nstdin a\nstdin a\n", 3, "stdin given twice"},
        {"proc a bind=serve\nstdin\n", 2, "expected 'stdin NAME'"},
        {"pipeline bad/name\nproc a bind=serve\n", 1, "bad pipeline name"},
        {"var = 3\nproc a bind=serve\n", 1, "expected a variable name"},
        {"var x 3\nproc a bind=serve\n", 1, "expected 'var x = VALUE'"},
        {"var x =\nproc a bind=serve\n", 1, "missing value"},
        {"var x = a b\nproc a bind=serve\n", 1, "several words"},
        {"proc a bind=serve -- ${oops\n", 1, "unterminated '${'"},
        {"proc a bind=serve -- x\\\n", 1, "ends in a backslash"},
        {"proc\n", 1, "expected a process name"},
        {"proc a! bind=serve\n", 1, "unexpected '!'"},
        {"proc a bind=serve hello\n", 1, "expected key=value"},
        {"host h address=1.2.3.4\nhost h address=1.2.3.5\nproc a bind=serve\n", 2, "declared twice"},
        {"host h bindir=relative\nproc a bind=serve\n", 1, "absolute"},
        {"var stop_timeout = -1\nproc a bind=serve\n", 1, "stop_timeout must be"},
        {"proc a bind=serve\r\nproc a bind=serve\r\n", 2, "duplicate"},
        {"\xef\xbb\xbfproc a bind=serve\n", 1, "unknown statement"},
        {"proc a bind=serve\nwat\x01\n", 2, "binary data (byte 0x01 at column 4)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Pipeline pl;
        int rc = parse(&pl, cases[i].text, 0, NULL);
        char where[32];
        snprintf(where, sizeof where, "t.pipe:%d: ", cases[i].line);
        CHECK(rc < 0, "case %zu parsed but should fail", i);
        if (rc == 0) { pipeline_free(&pl); continue; }
        CHECK(strncmp(err, where, strlen(where)) == 0 && strstr(err, cases[i].want), "case %zu: want %s...%s, got: %s", i,
              where, cases[i].want, err);
        CHECK(strstr(err, "\n    "), "case %zu: offending line not shown: %s", i, err);
    }
}

static void test_set_errors(void) {
    Pipeline pl;
    char *unknown[] = {"nope=1"};
    CHECK(parse(&pl, "proc a bind=serve\n", 1, unknown) < 0 && strstr(err, "--set nope: t.pipe has no variable"), "%s", err);
    char *noeq[] = {"K"};
    CHECK(parse(&pl, "var K = 1\nproc a bind=serve\n", 1, noeq) < 0 && strstr(err, "--set K: expected NAME=VALUE"), "%s", err);
    char *badt[] = {"reply_timeout=0"};
    CHECK(parse(&pl, "proc a bind=serve\n", 1, badt) < 0 && strstr(err, "--set reply_timeout=0: expected a number"), "%s", err);
    CHECK(parse(&pl, "", 0, NULL) < 0 && strstr(err, "t.pipe: no processes"), "%s", err);
    /* a tiny error buffer is never overrun */
    char small[8];
    CHECK(pipeline_parse(&pl, "t.pipe", "bogus\n", 6, 0, NULL, small, sizeof small) < 0 && strlen(small) < sizeof small, "small");
}

/* threads=N (0: the launcher's share) and pipeline_share_threads (docs/PIPELINES.md
 * "Threads"): explicit counts are kept and taken off the local cores, the rest is shared
 * evenly among the local CPU processes whose role computes (remainder to the first ones, at
 * least 1 each, at most PIPE_MAX_THREADS), every other local process gets 1, a remote one
 * without threads= none. */
static void test_threads(void) {
    Pipeline pl;
    const char *text =
        "host far address=10.0.0.9\n"
        "var K = 3\n"
        "var t = 0\n"
        "proc data bind=serve\n"
        "proc router connect=data\n"
        "proc teacher bind=serve threads=$t\n"
        "proc critic[k in 0..$K-1] bind=serve\n"
        "proc student[k in 0..$K-1] connect=data,teacher,critic=critic.$k threads=$k%2*2\n"
        "proc gcritic bind=g gpu=0 role=critic\n"
        "proc rteacher bind=r host=far role=teacher\n"
        "proc rteacher2 bind=r host=far role=teacher threads=5\n";
    REQUIRE(parse(&pl, text, 0, NULL) == 0, "%s", err);
    CHECK(proc(&pl, "student.1")->threads == 2 && proc(&pl, "student.0")->threads == 0 &&
          proc(&pl, "rteacher2")->threads == 5, "threads= as written");
    /* 10 cores, 2 taken by student.1's threads=2: 8 among teacher, critic.0-2, student.0, student.2 */
    static const struct { const char *name; int want; } ten[] = {
        {"data", 1}, {"router", 1}, {"teacher", 2}, {"critic.0", 2}, {"critic.1", 1}, {"critic.2", 1},
        {"student.0", 1}, {"student.1", 2}, {"student.2", 1}, {"gcritic", 1}, {"rteacher", 0}, {"rteacher2", 5}};
    pipeline_share_threads(&pl, 10);
    CHECK(pl.cores == 10 && pl.sharers == 6, "cores %d sharers %d, want 10 and 6", pl.cores, pl.sharers);
    for (size_t i = 0; i < sizeof ten / sizeof ten[0]; i++)
        CHECK(proc(&pl, ten[i].name)->cpu_threads == ten[i].want, "10 cores: %s gets %d threads, want %d", ten[i].name,
              proc(&pl, ten[i].name)->cpu_threads, ten[i].want);
    /* fewer cores than processes: every sharer still gets 1 */
    pipeline_share_threads(&pl, 1);
    for (size_t i = 0; i < sizeof ten / sizeof ten[0]; i++) {
        int want = ten[i].want == 2 && strcmp(ten[i].name, "student.1") ? 1 : ten[i].want;
        CHECK(proc(&pl, ten[i].name)->cpu_threads == want, "1 core: %s gets %d threads, want %d", ten[i].name,
              proc(&pl, ten[i].name)->cpu_threads, want);
    }
    pipeline_free(&pl);
    /* a lone computing process gets every core, up to the limit; --set reaches threads= */
    REQUIRE(parse(&pl, "proc data bind=serve\nproc critic bind=serve\n", 0, NULL) == 0, "%s", err);
    pipeline_share_threads(&pl, 4);
    CHECK(proc(&pl, "critic")->cpu_threads == 4 && proc(&pl, "data")->cpu_threads == 1, "4 cores: critic %d data %d",
          proc(&pl, "critic")->cpu_threads, proc(&pl, "data")->cpu_threads);
    pipeline_share_threads(&pl, 1000);
    CHECK(proc(&pl, "critic")->cpu_threads == PIPE_MAX_THREADS, "1000 cores: %d", proc(&pl, "critic")->cpu_threads);
    pipeline_free(&pl);
    char *sets[] = {"t=3"};
    REQUIRE(parse(&pl, "var t = 0\nproc critic bind=serve threads=$t\nproc teacher bind=s\n", 1, sets) == 0, "%s", err);
    pipeline_share_threads(&pl, 8);
    CHECK(proc(&pl, "critic")->cpu_threads == 3 && proc(&pl, "teacher")->cpu_threads == 5, "--set t=3 on 8 cores: %d and %d",
          proc(&pl, "critic")->cpu_threads, proc(&pl, "teacher")->cpu_threads);
    pipeline_free(&pl);
}

/* cpus=LIST (docs/PIPELINES.md "Threads"): the set as written (numbers, ranges, repeats
 * counted once; none: unpinned), printed back as taskset writes it, and its size as the thread
 * count where threads= is not given, taken off the shared cores. */
static void test_cpus(void) {
    Pipeline pl;
    char text[8];
    const char *src =
        "var c = none\n"
        "proc data bind=serve cpus=$c\n"
        "proc teacher bind=serve cpus=0-3,8,2,10-11\n"
        "proc critic[k in 0..1] bind=serve cpus=$k\n"
        "proc student bind=serve cpus=5-6 threads=1\n"
        "proc other bind=serve role=critic\n";
    REQUIRE(parse(&pl, src, 0, NULL) == 0, "%s", err);
    const PipeProc *t = proc(&pl, "teacher");
    CHECK(proc(&pl, "data")->ncpus == 0 && t->ncpus == 7 && proc(&pl, "critic.1")->ncpus == 1, "ncpus data %d teacher %d critic.1 %d",
          proc(&pl, "data")->ncpus, t->ncpus, proc(&pl, "critic.1")->ncpus);
    char list[64];
    pipeline_cpus_text(t->cpuset, list, sizeof list);
    CHECK(strcmp(list, "0-3,8,10-11") == 0, "teacher's list '%s'", list);
    pipeline_cpus_text(proc(&pl, "critic.1")->cpuset, list, sizeof list);
    CHECK(strcmp(list, "1") == 0, "critic.1's list '%s'", list);
    pipeline_cpus_text(proc(&pl, "data")->cpuset, list, sizeof list);
    CHECK(list[0] == 0, "an empty set prints as '%s'", list);
    pipeline_cpus_text(t->cpuset, text, sizeof text); /* cut short, still terminated */
    CHECK(strlen(text) < sizeof text, "short buffer: '%s'", text);
    /* 16 cores: teacher 7 (its CPUs), critics 1 each, student 1 (threads= wins): 6 left for other */
    pipeline_share_threads(&pl, 16);
    CHECK(t->cpu_threads == 7 && proc(&pl, "critic.0")->cpu_threads == 1 && proc(&pl, "student")->cpu_threads == 1 &&
          proc(&pl, "other")->cpu_threads == 6 && proc(&pl, "data")->cpu_threads == 1,
          "16 cores: teacher %d critic.0 %d student %d other %d data %d", t->cpu_threads, proc(&pl, "critic.0")->cpu_threads,
          proc(&pl, "student")->cpu_threads, proc(&pl, "other")->cpu_threads, proc(&pl, "data")->cpu_threads);
    pipeline_free(&pl);
    char *sets[] = {"c=7"};
    REQUIRE(parse(&pl, src, 1, sets) == 0, "%s", err);
    pipeline_cpus_text(proc(&pl, "data")->cpuset, list, sizeof list);
    CHECK(proc(&pl, "data")->ncpus == 1 && strcmp(list, "7") == 0, "--set c=7: '%s'", list);
    pipeline_free(&pl);
    /* 65 CPUs: at most 64 threads */
    REQUIRE(parse(&pl, "proc critic bind=serve cpus=0-64\n", 0, NULL) == 0, "%s", err);
    pipeline_share_threads(&pl, 128);
    CHECK(proc(&pl, "critic")->cpu_threads == PIPE_MAX_THREADS, "65 CPUs: %d threads", proc(&pl, "critic")->cpu_threads);
    pipeline_free(&pl);
}

/* Overlong lines and files, many errors, many processes: all bounded. */
static void test_limits(void) {
    Pipeline pl;
    size_t n = PIPE_MAX_LINE + 100;
    char *text = malloc(n + 32);
    memcpy(text, "proc a bind=serve -- ", 21);
    memset(text + 21, 'x', n - 21);
    text[n] = '\n';
    text[n + 1] = 0;
    CHECK(parse(&pl, text, 0, NULL) < 0 && strstr(err, "t.pipe:1: line too long"), "%.200s", err);
    free(text);
    CHECK(parse(&pl, "proc s[k in 0..300] bind=serve\n", 0, NULL) < 0 && strstr(err, "too large"), "%s", err);
    /* too many errors: stops after PIPE_MAX_ERRORS */
    char many[2000] = "";
    for (int i = 0; i < 30; i++) strcat(many, "junk\n");
    CHECK(parse(&pl, many, 0, NULL) < 0 && strstr(err, "too many errors"), "%s", err);
    /* a 1 MiB + 1 file */
    char *big = malloc(PIPE_MAX_FILE + 2);
    memset(big, '#', PIPE_MAX_FILE + 1);
    CHECK(pipeline_parse(&pl, "t.pipe", big, PIPE_MAX_FILE + 1, 0, NULL, err, sizeof err) < 0 && strstr(err, "too large"), "%s", err);
    free(big);
}

/* A trailing backslash joins a line with the next: the statement reads as one line, comments
 * after the join still work, errors name the statement's first line, a backslash on the last
 * line and a joined statement over the line limit are errors. */
static void test_continuation(void) {
    Pipeline pl;
    const char *text =
        "var K = 2\n"
        "proc data bind=serve\n"
        "proc student[k in 0..$K-1] \\\n"
        "    connect=data \\\n"
        "    -- --steps 7 \\\n"
        "       --seed $k   # a comment after the join\n"
        "proc other bind=x -- a\\\n"
        "b\n";
    REQUIRE(parse(&pl, text, 0, NULL) == 0, "%s", err);
    const PipeProc *s1 = proc(&pl, "student.1");
    REQUIRE(s1, "no student.1");
    CHECK(s1->argc == 4 && strcmp(s1->argv[0], "--steps") == 0 && strcmp(s1->argv[3], "1") == 0,
          "joined args: argc %d", s1->argc);
    CHECK(s1->nconnects == 1, "connects %d", s1->nconnects);
    const PipeProc *o = proc(&pl, "other");
    CHECK(o && o->argc == 2 && strcmp(o->argv[0], "a") == 0 && strcmp(o->argv[1], "b") == 0,
          "a backslash joins with one space");
    pipeline_free(&pl);
    CHECK(parse(&pl, "proc a bind=serve\nproc b \\\n  connect=c\n", 0, NULL) < 0 &&
              strstr(err, "t.pipe:2: ") && strstr(err, "no process named 'c'"),
          "error at the statement's first line: %s", err);
    CHECK(parse(&pl, "proc a bind=serve \\\n", 0, NULL) < 0 && strstr(err, "ends in a backslash"), "%s", err);
    size_t n = PIPE_MAX_LINE / 2 + 10;
    char *big = malloc(2 * n + 64);
    size_t o2 = 0;
    o2 += (size_t)sprintf(big, "proc a bind=serve -- ");
    memset(big + o2, 'x', n); o2 += n;
    big[o2++] = '\\'; big[o2++] = '\n';
    memset(big + o2, 'y', n); o2 += n;
    big[o2++] = '\n'; big[o2] = 0;
    CHECK(parse(&pl, big, 0, NULL) < 0 && strstr(err, "statement too long (lines 1-2"), "%.200s", err);
    free(big);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Random bytes and random token soup: never a crash (the sanitizer build checks memory). */
static void test_random_input(void) {
    static const char *vocab[] = {"proc", "var", "host", "stdin", "pipeline", " ", " ", "\n", "a", "s[k in 0..2]", "=",
                                  "bind=serve", "connect=a", "connect=s", "gpu=", "$K", "${K}", "$$", "\"", "'", "\\",
                                  "--", "#", "K", "0..", "[", "]", "host=h", "address=1.2.3.4", "ports=1-2", ",", ":",
                                  "\t", "\r", "\x01", "\xff", "(", ")", "*", "99999999999", "-", "serve", "server=yes"};
    char buf[512];
    int ok = 0;
    for (int it = 0; it < 3000; it++) {
        size_t len = 0;
        static const char base[] = "var K = 2\nproc data bind=serve\nproc s[k in 0..$K-1] bind=serve connect=data -- --n $k\n"
                                   "proc r connect=s\nstdin r\n";
        if (it % 3 == 2) { /* a valid file with a few words swapped in */
            len = sizeof base - 1;
            memcpy(buf, base, len);
            for (int m = 0, nm = (int)(rnd() % 3); m < nm; m++) {
                const char *v = vocab[rnd() % (sizeof vocab / sizeof vocab[0])];
                size_t at = rnd() % len, vl = strlen(v);
                if (at + vl <= len) memcpy(buf + at, v, vl);
            }
        } else if (it % 3 == 0) {
            len = rnd() % sizeof buf;
            for (size_t i = 0; i < len; i++) buf[i] = (char)rnd();
        } else {
            int words = (int)(rnd() % 40);
            for (int w = 0; w < words; w++) {
                const char *v = vocab[rnd() % (sizeof vocab / sizeof vocab[0])];
                size_t vl = strlen(v);
                if (len + vl >= sizeof buf) break;
                memcpy(buf + len, v, vl);
                len += vl;
            }
        }
        Pipeline pl;
        char *sets[] = {"K=2"};
        int rc = pipeline_parse(&pl, "r.pipe", buf, len, it % 2, sets, err, sizeof err);
        if (rc == 0) {
            ok++;
            char perr[256];
            pipeline_plan(&pl, "/r", NULL, NULL, perr, sizeof perr);
            pipeline_free(&pl);
        } else {
            CHECK(strncmp(err, "r.pipe", 6) == 0 || strncmp(err, "--set", 5) == 0, "iteration %d: odd message %s", it, err);
        }
    }
    printf("  random inputs: %d of 3000 parsed\n", ok);
}

int main(void) {
    TEST_RUN(test_echo_like);
    TEST_RUN(test_sets_and_quotes);
    TEST_RUN(test_hosts_and_tcp);
    TEST_RUN(test_bad_files);
    TEST_RUN(test_set_errors);
    TEST_RUN(test_threads);
    TEST_RUN(test_cpus);
    TEST_RUN(test_limits);
    TEST_RUN(test_continuation);
    TEST_RUN(test_random_input);
    return TEST_END();
}
