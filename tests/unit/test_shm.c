/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the shared-memory primitives: a lock whose holder is killed
 * for real (fork + SIGKILL) must not wedge the others.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imx_shmlock.h"

#include "check.h"

static void *shared(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

/* A child takes the lock and is killed while holding it: the parent must get
 * it (told that the holder died), and it must stay usable afterwards. */
static void test_holder_killed(int how)
{
    imx_shmlock_t *l = shared(sizeof(*l));
    volatile int *held = shared(sizeof(int));
    pid_t pid;
    int rv, st;

    CHECK(imx_shmlock_init(l) == 0, "init");
    *held = 0;
    pid = fork();
    if (pid == 0) {
        imx_shmlock_lock(l);
        *held = 1;
        if (how == 0) {
            pause();            /* killed with SIGKILL while holding it */
        }
        _exit(0);               /* exits holding it */
    }
    for (int i = 0; i < 5000 && !*held; i++) {
        usleep(1000);
    }
    CHECK(*held, "child never took the lock");
    if (how == 0) {
        rv = imx_shmlock_trylock(l);
        CHECK(rv == EBUSY, "trylock while a live child holds it: %d", rv);
        kill(pid, SIGKILL);
    }
    waitpid(pid, &st, 0);
    rv = imx_shmlock_lock(l);
    CHECK(rv == IMX_SHMLOCK_RECOVERED, "lock after the holder died: %d", rv);
    imx_shmlock_unlock(l);
    rv = imx_shmlock_lock(l);
    CHECK(rv == 0, "lock again after recovery: %d", rv);
    imx_shmlock_unlock(l);
    rv = imx_shmlock_trylock(l);
    CHECK(rv == 0, "trylock of a free lock: %d", rv);
    imx_shmlock_unlock(l);
    munmap(l, sizeof(*l));
    munmap((void *)held, sizeof(int));
}

/* Many processes increment a shared counter under the lock while some of them
 * are killed mid-way: the survivors finish, nobody wedges. */
static void test_contended_with_kills(void)
{
    enum { NPROC = 6, ROUNDS = 20000 };
    imx_shmlock_t *l = shared(sizeof(*l));
    volatile long *counter = shared(sizeof(long));
    pid_t pids[NPROC];
    time_t start = time(NULL);
    int done = 0;

    CHECK(imx_shmlock_init(l) == 0, "init");
    *counter = 0;
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            for (int k = 0; k < ROUNDS; k++) {
                imx_shmlock_lock(l);
                (*counter)++;
                imx_shmlock_unlock(l);
            }
            _exit(0);
        }
    }
    usleep(2000);
    kill(pids[0], SIGKILL);
    kill(pids[1], SIGKILL);
    for (int i = 0; i < NPROC; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) == pids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            done++;
        }
    }
    CHECK(time(NULL) - start < 60, "took too long: a wedge?");
    CHECK(done >= NPROC - 2, "survivors finished: %d", done);
    CHECK(*counter >= (long)done * ROUNDS, "counter %ld", *counter);
    {
        int rv = imx_shmlock_trylock(l);
        CHECK(rv == 0 || rv == IMX_SHMLOCK_RECOVERED, "lock free at the end: %d", rv);
        if (rv == 0 || rv == IMX_SHMLOCK_RECOVERED) {
            imx_shmlock_unlock(l);
        }
    }
    munmap(l, sizeof(*l));
    munmap((void *)counter, sizeof(long));
}

int main(void)
{
    test_holder_killed(0);
    test_holder_killed(1);
    test_contended_with_kills();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
