#!/usr/bin/Rscript
# Fit the peer benchmark's mixture of experts with R's flexmix: K linear
# Gaussian experts (FLXMRglm) behind a multinomial-logit gate on the same
# inputs (FLXPmultinom), by EM.  Prints one JSON line.
#
#   Rscript bench/peers/flexmix.R file=DATA.csv [k=8] [tol=1e-6] [seed=1]
#           [nrep=1] [iter.max=1000] [minprior=0]
#
# DATA.csv: numeric columns, target named y, every other column an input.
# nrep = 1 is one EM run from flexmix's random start; nrep > 1 uses
# stepFlexmix and keeps the best run (the time is then that of all runs).
# tol is flexmix's `tolerance`: stop when |l - l_old| / (|l| + 0.1) < tol.
# minprior: flexmix drops components whose prior falls below it.  Its default,
# 0.05, drops one of the 8 on the synthetic data (seeds 1-4: k = 7, loglik
# -136,253), so the default here is 0: keep K fixed, like moe and torch.
# The final number of components is printed as "k".
# seconds = system.time() elapsed of the fit only (not reading the CSV).

if (!requireNamespace("flexmix", quietly = TRUE)) {
    message("flexmix.R: R package 'flexmix' is missing (apt-get install r-cran-flexmix)")
    quit(status = 3)
}
suppressPackageStartupMessages(library(flexmix))

opt <- list(file = NULL, k = 8, tol = 1e-6, seed = 1, nrep = 1, iter.max = 1000,
            minprior = 0)
for (a in commandArgs(trailingOnly = TRUE)) {
    kv <- strsplit(a, "=", fixed = TRUE)[[1]]
    if (length(kv) != 2 || !(kv[1] %in% names(opt))) {
        message("flexmix.R: bad argument '", a, "'; expected one of: ",
                paste0(names(opt), "=", collapse = " "))
        quit(status = 2)
    }
    opt[[kv[1]]] <- if (kv[1] == "file") kv[2] else as.numeric(kv[2])
}
if (is.null(opt$file) || !file.exists(opt$file)) {
    message("flexmix.R: give file=DATA.csv (an existing file)")
    quit(status = 2)
}

d <- read.csv(opt$file)
if (!("y" %in% names(d))) { message("flexmix.R: no column 'y' in ", opt$file); quit(status = 2) }
inputs <- setdiff(names(d), "y")
gate <- as.formula(paste("~", paste(inputs, collapse = " + ")))
ctrl <- list(tolerance = opt$tol, iter.max = opt$iter.max, minprior = opt$minprior)

set.seed(opt$seed)
secs <- system.time({
    fit <- if (opt$nrep <= 1) {
        flexmix(y ~ ., data = d, k = opt$k, model = FLXMRglm(),
                concomitant = FLXPmultinom(gate), control = ctrl)
    } else {
        stepFlexmix(y ~ ., data = d, k = opt$k, nrep = opt$nrep, verbose = FALSE,
                    model = FLXMRglm(), concomitant = FLXPmultinom(gate), control = ctrl)
    }
})[["elapsed"]]

ll <- logLik(fit)
cat(sprintf(paste0('{"system": "flexmix", "seconds": %.3f, "iterations": %d, "loglik": %.6f, ',
                   '"df": %d, "converged": %s, "k": %d, "nrep": %d, "tol": %g, "seed": %d, ',
                   '"flexmix": "%s", "R": "%s"}\n'),
            secs, as.integer(fit@iter), as.numeric(ll), as.integer(attr(ll, "df")),
            tolower(as.character(fit@converged)), as.integer(fit@k), as.integer(opt$nrep),
            opt$tol, as.integer(opt$seed), as.character(packageVersion("flexmix")),
            paste(R.version$major, R.version$minor, sep = ".")))
