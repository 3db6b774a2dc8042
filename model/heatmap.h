/* Labelled heatmaps as PNG, for `modsquad eval`: one panel per MoE layer, showing the T x E
 * task-by-expert usage matrix (the percent of task t's token selections that went to expert e)
 * so that a person can read which experts each task uses at a glance.
 *
 * Layout: the image title on top, then the panels stacked vertically, or in two columns when
 * there are four or more and two fit side by side within MS_HEATMAP_MAX_WIDTH. A panel is its
 * title, expert numbers over the columns, task names left of the rows, one cell per (t, e)
 * coloured by a viridis-like sequential map from 0 (dark purple) to vmax (yellow) with the
 * rounded value printed inside when it fits, and a colour bar with its 0 and vmax to the right.
 * NaN values are grey cells; a panel with no rows, no columns or no values says "(no data)".
 * All panels share one label width and cell size, so their grids line up. */
#ifndef MS_HEATMAP_H
#define MS_HEATMAP_H

#include <stddef.h>
#include <stdint.h>

#include "../data/image.h"

#define MS_HEATMAP_MAX_WIDTH 2000 /* cells narrow (down to 6 px) to keep the image this wide */
#define MS_HEATMAP_MAX_LABEL 20   /* longer row labels are cut, ending in '~' */
#define MS_HEATMAP_TEXT_SCALE 2   /* labels and panel titles: the 5x7 font at twice its size */
#define MS_HEATMAP_TITLE_SCALE 3  /* the image title, MS_HEATMAP_MARGIN from the top left */
#define MS_HEATMAP_MARGIN 16      /* white border around everything */

typedef struct {
    const char *title;             /* e.g. "block 0 attention (E=15, k=6)"; NULL = none */
    int rows, cols;                /* T tasks x E experts */
    const char *const *row_labels; /* [rows] task names; NULL = row numbers */
    const double *values;          /* [rows * cols] row-major, percent; NaN = unknown */
    double vmax;                   /* value drawn in the top colour; <= 0 = the panel's max */
} ms_heatmap_panel;

/* Where a panel's cells landed: cell (r, c) covers x + c * cell_w .. + cell_w - 2 and
 * y + r * cell_h .. + cell_h - 2 (the last pixel row and column are a white gap). */
typedef struct {
    int x, y;
    int cell_w, cell_h;
} ms_heatmap_grid;

/* Renders the heatmap and writes it to path as an 8-bit RGB PNG (atomically, through
 * ms_png_write). Returns 0, or -1 with a message naming the path or the bad panel in err. */
int ms_heatmap_write(const char *path, const char *title, int n_panels,
                     const ms_heatmap_panel *panels, char *err, size_t cap);

/* The same picture in memory: im becomes W x H x 3, 8-bit (its buffer is grown as needed;
 * release it with ms_image_free). grids, when not NULL, receives [n_panels] cell positions.
 * Returns 0, or -1 with a message in err. */
int ms_heatmap_render(const char *title, int n_panels, const ms_heatmap_panel *panels,
                      ms_image *im, ms_heatmap_grid *grids, char *err, size_t cap);

/* The colour map: t in [0, 1] (clamped) from the bottom to the top colour; NaN gives the grey
 * of unknown cells. */
void ms_heatmap_color(double t, uint8_t rgb[3]);

/* Draws s (not NULL) into an 8-bit RGB image with its top-left corner at (x, y), each font
 * pixel as a scale x scale square, clipped to the image; characters advance
 * (MS_FONT_W + 1) * scale, and descenders reach MS_FONT_DESCENT * scale below the MS_FONT_H * scale line.
 * Only ink is drawn (the background shows through). Returns the width of the text in pixels. */
int ms_heatmap_text(ms_image *im, int x, int y, const char *s, int scale, const uint8_t rgb[3]);

/* ---- the embedded 5x7 font (model/font5x7.c) ------------------------------------------------ */

#define MS_FONT_W 5
#define MS_FONT_H 7
#define MS_FONT_DESCENT 2 /* rows a descending glyph is drawn below the others */

/* 1 where glyph ch has ink at column x (0..4, left to right), row y (0..6, top to bottom);
 * characters outside printable ASCII 32..126 draw as '?'. */
int ms_font5x7_pixel(int ch, int x, int y);
/* 1 for the glyphs (g, p, q, y) drawn MS_FONT_DESCENT rows lower, so that their tails hang
 * below the baseline; text therefore reaches MS_FONT_H + MS_FONT_DESCENT rows. */
int ms_font5x7_descends(int ch);

#endif
