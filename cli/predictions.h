/* modsquad eval --save-predictions DIR: every prediction of an evaluation written as the file
 * the dataset itself would hold for that sample, so that the dataset's own loader reads it back
 * as the prediction, up to the file's quantisation (docs/datasets.md, "Saved predictions").
 *
 * Layout: DIR/{task}/{the sample's file name in the dataset}
 *   Taskonomy  DIR/{task}/{building}/point_{p}_view_{v}_domain_{domain}.{png|npy}, the older
 *              flat layout the loader accepts, with the published irregular names
 *              (..._domain_segmentsemantic.png, ..._domain_class_places.npy)
 *   PASCAL     DIR/{task}/{id}.png
 * plus DIR/README.txt naming the encoding of every task. Files are written at the evaluated
 * size (data.image_size, after the evaluation resize and crop). Each file is replaced
 * atomically (temporary file + rename), so a reader never sees half a file. */
#ifndef MS_CLI_PREDICTIONS_H
#define MS_CLI_PREDICTIONS_H

#include <stdint.h>

#include "../data/dataset.h"
#include "../model/config.h"
#include "run.h" /* ms_pred_sink */

typedef struct ms_pred_writer ms_pred_writer;

/* Creates dir (with its parents) and, when readme is set, dir/README.txt for cfg's tasks; d
 * (which must outlive the writer) names the samples. NULL, with a message on stderr naming the
 * path that could not be created or written, when dir is not writable.
 *
 * Several ranks may write into one dir at once (modsquad eval under mpirun), one writer each,
 * README from one of them: each writes the files of its own samples only, directories are
 * created race-free (an existing one is fine) and every file goes through its own uniquely
 * named temporary file, so no two ranks ever write the same path. */
ms_pred_writer *ms_pred_writer_open(const char *dir, const ms_config *cfg, const ms_data *d,
                                    int readme);

/* The sink that hands ms_cli_evaluate's predictions to w. Its function writes one file per
 * task and real sample of each batch; on a failed write it prints the path and why and returns
 * non-zero, which stops the evaluation. */
ms_pred_sink ms_pred_writer_sink(ms_pred_writer *w);

/* Files written so far. */
int64_t ms_pred_writer_files(const ms_pred_writer *w);

void ms_pred_writer_close(ms_pred_writer *w);

#endif
