/*
 * moe_mpi.c -- main() of `moe-mpi`: `moe train` over several processes
 * with Open MPI.
 *
 *   mpirun -np R moe-mpi train [the options of moe train] DATA -o MODEL
 *
 * Every process reads its own share of the rows (moe_shard_rows: whole
 * groups of the rows the trainer sums together), trains with a reducer
 * whose sum is one MPI_Allreduce, and ends with the same model; process 0
 * alone prints and writes the model. With a .moed file each process reads
 * only its rows; a CSV file is parsed by every process (the encoding must
 * see every row), which then keeps its share.
 *
 * The library never calls MPI: this file is the only one that does.
 */
#include "cli.h"
#include "mpi_sum.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "Usage: mpirun -np R moe-mpi train [options] DATA -o MODEL\n"
               "Train a mixture of experts over R processes (Open MPI): the options are\n"
               "those of 'moe train' (see 'moe help train'). Each process reads its share\n"
               "of the rows; the statistics are summed with one MPI_Allreduce per pass;\n"
               "process 0 writes the model, the same model one process would fit.\n"
               "Give a .moed file (moe convert) so that each process reads only its rows.\n");
}

int main(int argc, char **argv) {
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "moe-mpi: MPI_Init failed\n");
        return CLI_EXIT_RUNTIME;
    }
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank = 0, size = 1, rc;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    moe_reducer red = {mpi_sum_doubles, &comm, rank, size};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (rank == 0) usage(argc < 2 ? stderr : stdout);
        rc = argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    } else if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        if (rank == 0) printf("moe-mpi %s (libmoe %s)\n", MOE_VERSION_STRING, moe_version());
        rc = CLI_EXIT_OK;
    } else if (strcmp(argv[1], "train") != 0) {
        if (rank == 0)
            cli_error(NULL, "moe-mpi runs 'train' only (got '%.60s'); see moe-mpi --help", argv[1]);
        rc = CLI_EXIT_USAGE;
    } else {
        cli_group = &red;
        rc = cli_cmd_train(argc - 1, argv + 1);
    }
    /* A process that failed (perhaps alone, e.g. it could not read its
     * rows) must not leave the others waiting in a collective: it ends the
     * whole job. Failures during training reach every process through the
     * library's sums, so they all stop here together. */
    fflush(NULL);
    if (rc != CLI_EXIT_OK) MPI_Abort(comm, rc);
    MPI_Finalize();
    return rc;
}
