#include "signals.h"

#include <string.h>
#include <unistd.h>

volatile sig_atomic_t ms_stop_signal = 0;

static void on_signal(int sig) {
    if (sig == SIGINT && ms_stop_signal == SIGINT) {
        /* Second Ctrl-C: the user wants out now. */
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
        return;
    }
    if (!ms_stop_signal) ms_stop_signal = sig;
    static const char msg[] = "\nmodsquad: stop requested: finishing this step and writing a checkpoint\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
}

void ms_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}
