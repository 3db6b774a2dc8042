/* PASCAL-Context multi-task (PASCAL_MT, DATASETS.md): the label rules the loader applies, as the
 * reference loader (SimonVandenhende/Multi-Task-Learning-PyTorch data/pascal_context.py and
 * data/custom_transforms.py) does. Reading samples is ms_pascal_open (data/dataset.h).
 *
 * Layout under data.root (the PASCAL_MT folder):
 *   JPEGImages/{id}.jpg                    the image (8-bit colour)
 *   ImageSets/Context/{split}.txt          one id per line (any line ending)
 *   semseg/VOC12/{id}.png                  used when present (the reference prefers it) ...
 *   semseg/pascal-context/{id}.png         ... else this: 21 classes, 255 ignore, index PNG
 *   human_parts/{id}.mat                   'anno' (PASCAL-Part)
 *   normals_distill/{id}.png               8-bit RGB, 2x/255-1
 *   sal_distill/{id}.png                   8-bit grey, x/255 > 0.5
 *   pascal-context/trainval/{id}.mat       'LabelMap' (459 context classes): edges, and where
 *                                          normals are valid */
#ifndef MS_DATA_PASCAL_CONTEXT_H
#define MS_DATA_PASCAL_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#define MS_PASCAL_PERSON 15     /* VOC class of a person */
#define MS_PASCAL_N_PARTS 6     /* human part classes 1..6 (0 = background) */
#define MS_PASCAL_IGNORE 255

/* The 6-part class (1..6) of a PASCAL-Part person part name ("llarm" -> 4), or 0 when the name
 * is not a person part. The reference's HUMAN_PART[6] table: 1 head (hair, head, ears, eyes,
 * eyebrows, nose, mouth), 2 torso and neck, 3 upper arms, 4 lower arms and hands, 5 upper
 * legs, 6 lower legs and feet. */
int ms_pascal_part_class(const char *name);

/* 1 when PASCAL-Context class id (1..459) is one of the 170 classes whose distilled normals
 * are supervised: the classes whose names are also NYUv2 classes (the reference's
 * nyu_classes.json and context_classes.json, 'unknown' excluded) plus tvmonitor. */
int ms_pascal_normals_valid(int32_t context_class);
/* The number of such classes (170). */
int ms_pascal_normals_valid_count(void);

/* Edge map of a LabelMap, as the reference computes it: thin(|Laplacian(LabelMap)| > 0), with
 * OpenCV's 3x3 Laplacian (ksize 1, border reflect-101) and scikit-image's thin() (Guo-Hall,
 * iterated to convergence). labels: [H, W]; edges: [H, W] 0 / 1; scratch: [H, W] bytes. */
void ms_pascal_edges(const int32_t *labels, int H, int W, uint8_t *edges, uint8_t *scratch);

/* scikit-image's morphology.thin of a 0/1 image, in place. tmp: [H, W] bytes. */
void ms_thin(uint8_t *img, int H, int W, uint8_t *tmp);

#endif
