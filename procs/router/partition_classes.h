/* partition_classes.h: the classes of a labelled image dataset for msd-router --mode partition
 * (partition_classes.c): their embeddings from a checkpoint and their names. */
#ifndef MSD_ROUTER_PARTITION_CLASSES_H
#define MSD_ROUTER_PARTITION_CLASSES_H

#include <stddef.h>

typedef struct RouterClasses {
    int n, d;                 /* classes, embedding width */
    double *emb;              /* (n, d), each row scaled to unit length */
    const char **names;       /* n names (the dataset's table or the ids "0".."n-1") */
    char **owned;             /* the id strings when names are ids, else NULL */
} RouterClasses;

/* Read tensor (NULL: "map_label.weight") from the safetensors file ckpt: a (d, n) matrix whose
 * columns are the classes (a teacher's class embedding, map_label.weight, docs/UNET.md section
 * 2) or, when its second dimension is not n, an (n, d) matrix whose rows are (a classifier
 * head, fc1.weight). dataset: "fmnist" (10 classes, dataset_fmnist_names) or "ids" (n from the
 * tensor's smaller dimension, named by id). 0, or -1 with a message naming the file and tensor. */
int router_classes_load(RouterClasses *rc, const char *ckpt, const char *tensor, const char *dataset, char *err,
                        size_t errlen);
/* The prototypes of a prompts file (common/text/prompts.h) as the class embeddings: each
 * phrasing embedded by all-MiniLM-L6-v2 (model from minilm_default_dir), one unit vector per
 * class (d = 384). dataset as above. 0, or -1 with FILE:LINE or the model's error. */
int router_classes_from_prompts(RouterClasses *rc, const char *prompts, const char *dataset, char *err, size_t errlen);
void router_classes_free(RouterClasses *rc);

#endif
