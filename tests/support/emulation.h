/* emulation: how a unit test fits a run under an emulator.
 *
 * `make test-cross ARCH=...` runs the unit tests of a cross build under
 * qemu-user: tests/run-tests.sh starts each program under the command in
 * FEDOPT_TEST_WRAPPER, and the program inherits that variable. Emulated
 * floating point and cryptography are far slower than native, so a test
 * that is heavy natively (a gradient check of an 11-million-parameter model,
 * a full Fashion-MNIST epoch, a 50 MiB transfer over TLS, a thousand-party
 * secure aggregation) either runs a smaller case of the same check under
 * emulation or gives its wall-clock limits more time. What it changes it
 * says, with fl_emu_note, in the test's output; the native run (make test,
 * no wrapper) always runs the full-size case with its own limits.
 *
 * Running a native build with FEDOPT_TEST_WRAPPER=env exercises the
 * emulated sizes without an emulator (env runs the program unchanged). */
#ifndef FL_TEST_EMULATION_H
#define FL_TEST_EMULATION_H

#include <stddef.h>
#include <stdint.h>

/* 1 when the program runs under a test wrapper (FEDOPT_TEST_WRAPPER set and
 * not empty), else 0. */
int fl_emu_active(void);

/* How many times longer a wall-clock limit is under the wrapper: 1
 * natively; under it FEDOPT_TEST_TIME_FACTOR when that is a number >= 1,
 * else 20 (qemu-user runs this engine's arithmetic and mbedTLS roughly
 * 10-100 times slower than the host: docs/devices.md). */
double fl_emu_time_factor(void);

/* A limit of `ms` milliseconds scaled by fl_emu_time_factor. */
uint64_t fl_emu_ms(uint64_t ms);

/* `native` natively; `emulated` under the wrapper, with a line saying so
 * (fl_emu_note) naming `what`. */
size_t fl_emu_size(const char *what, size_t native, size_t emulated);

/* Prints "emulated: " and the formatted text on stdout when the wrapper is
 * set (nothing natively): what a test runs differently under emulation and
 * why. */
void fl_emu_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
