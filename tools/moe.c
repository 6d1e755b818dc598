/*
 * moe.c -- main() of the `moe` program: dispatch to the subcommands
 * (train, predict, eval, inspect, convert), `moe help COMMAND`, `moe --version`.
 *
 * The program never calls setlocale(), so it runs in the "C" locale:
 * numbers are read and written with a '.' whatever the user's locale.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", cli_cmd_train, "fit a mixture of experts to a CSV file and save the model"},
    {"predict", cli_cmd_predict, "predict from a model for every row of a CSV file"},
    {"eval", cli_cmd_eval, "score a model on a CSV file that holds the targets"},
    {"inspect", cli_cmd_inspect, "print everything in a model file, as text or JSON"},
    {"convert", cli_cmd_convert, "encode a CSV file once into a binary .moed data file"},
    {"update", cli_cmd_update, "continue a model on new rows by online EM"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "Usage: moe COMMAND [options] [arguments]\n"
               "Mixtures of experts, flat and hierarchical, fitted by EM.\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "help on a command: moe help COMMAND");
    fprintf(f, "\nOptions:\n  -h, --help     this help\n  -V, --version  print the version\n"
               "\nRun 'moe help COMMAND' (or 'moe COMMAND --help') for a command's options.\n"
               "Exit status: 0 ok, 1 bad usage or input, 2 runtime failure.\n");
}

static const command *find(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *a = argv[1];
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0 || strcmp(a, "version") == 0) {
        printf("moe %s (libmoe %s)\n", MOE_VERSION_STRING, moe_version());
        return CLI_EXIT_OK;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(a, "help") == 0) {
        if (argc < 3) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        const command *c = find(argv[2]);
        if (!c) {
            cli_error(NULL, "unknown command '%.60s' (try 'moe --help')", argv[2]);
            return CLI_EXIT_USAGE;
        }
        char *args[] = {(char *)c->name, "--help", NULL};
        return c->run(2, args);
    }
    const command *c = find(a);
    if (!c) {
        cli_error(NULL, "unknown command '%.60s' (try 'moe --help')", a);
        return CLI_EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
