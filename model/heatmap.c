#include "heatmap.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Geometry in pixels. Labels are the 5x7 font at x2 (12 px per character, 14 px tall), the
 * image title at x3; numbers inside cells are x2 when they fit and x1 otherwise ("100"). */
enum {
    TEXT = MS_HEATMAP_TEXT_SCALE,
    TITLE_TEXT = MS_HEATMAP_TITLE_SCALE,
    CELL_TEXT = 1, /* fallback */
    LINE = MS_FONT_H * TEXT,
    MARGIN = MS_HEATMAP_MARGIN,
    CELL_W = 32, /* a two-digit number at x2 (22 px) with room to tell neighbours apart */
    CELL_H = 24,
    CELL_MIN_W = 6,
    LABEL_GAP = 10,   /* row labels to grid */
    TITLE_GAP = 8,    /* panel title to expert numbers */
    HEADER_GAP = 5,   /* expert numbers to grid */
    BAR_GAP = 14,     /* grid to colour bar */
    BAR_W = 14,
    BAR_MIN_H = 66,   /* room for the two bar labels even with one row */
    BAR_TEXT_GAP = 6, /* colour bar to its labels */
    PANEL_GAP = 30,   /* between panels, vertically */
    COLUMN_GAP = 48,  /* between the two panel columns */
    MAX_CELLS = 1024,  /* rows or columns of one panel */
    MAX_PANELS = 4096, /* keeps every coordinate well inside an int */
};

/* A picture a person can open: 2000 x 50000 RGB is 300 MB already. */
#define MAX_PIXELS ((size_t)100 * 1000 * 1000)

static const uint8_t INK[3] = {25, 25, 30};        /* titles, labels */
static const uint8_t SOFT_INK[3] = {95, 95, 105};  /* expert numbers, captions */
static const uint8_t FRAME[3] = {120, 120, 120};   /* colour bar border */
static const uint8_t NAN_RGB[3] = {175, 175, 175}; /* unknown cells: no hue, unlike the map */

/* Viridis-like ramp: nine anchors at t = 0, 1/8, ..., 1, linearly interpolated in sRGB. Its
 * lightness rises monotonically, so larger values always look lighter, also in greyscale
 * and to colour-blind readers. */
static const uint8_t RAMP[9][3] = {
    {68, 1, 84},    {71, 45, 123}, {59, 82, 139},  {44, 114, 142}, {33, 145, 140},
    {40, 174, 128}, {94, 201, 98}, {173, 220, 48}, {253, 231, 37},
};

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && cap) vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

void ms_heatmap_color(double t, uint8_t rgb[3]) {
    if (isnan(t)) {
        memcpy(rgb, NAN_RGB, 3);
        return;
    }
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double u = t * 8;
    int i = (int)u;
    if (i > 7) i = 7;
    double f = u - i;
    for (int ch = 0; ch < 3; ch++)
        rgb[ch] = (uint8_t)lrint(RAMP[i][ch] + f * (RAMP[i + 1][ch] - RAMP[i][ch]));
}

/* ---- drawing primitives on an 8-bit RGB image ------------------------------------------------ */

static void fill_rect(ms_image *im, int x, int y, int w, int h, const uint8_t rgb[3]) {
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > im->width ? im->width : x + w;
    int y1 = y + h > im->height ? im->height : y + h;
    uint8_t *px = ms_image_u8(im);
    for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) memcpy(px + ((size_t)yy * im->width + xx) * 3, rgb, 3);
}

static int text_width(size_t n, int scale) {
    return n ? (int)n * (MS_FONT_W + 1) * scale - scale : 0;
}

int ms_heatmap_text(ms_image *im, int x, int y, const char *s, int scale, const uint8_t rgb[3]) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        int gx = x + (int)i * (MS_FONT_W + 1) * scale;
        int gy = y + (ms_font5x7_descends((unsigned char)s[i]) ? MS_FONT_DESCENT * scale : 0);
        for (int r = 0; r < MS_FONT_H; r++)
            for (int c = 0; c < MS_FONT_W; c++)
                if (ms_font5x7_pixel((unsigned char)s[i], c, r))
                    fill_rect(im, gx + c * scale, gy + r * scale, scale, scale, rgb);
    }
    return text_width(n, scale);
}

/* Copies s into buf cut to at most max_chars characters, marking a cut with a final '~'. */
static const char *clip(char *buf, size_t size, const char *s, int max_chars) {
    size_t n = strlen(s), max = max_chars > 0 ? (size_t)max_chars : 0;
    if (max + 1 > size) max = size - 1;
    if (n <= max) return s;
    if (max == 0) return "";
    memcpy(buf, s, max - 1);
    buf[max - 1] = '~';
    buf[max] = '\0';
    return buf;
}

/* ---- layout ---------------------------------------------------------------------------------- */

/* A legend value: whole percent from 10 up, one decimal below ("6.3%"), so small scales keep
 * their meaning. */
static void format_percent(char *buf, size_t size, double v) {
    snprintf(buf, size, v >= 10 || v == floor(v) ? "%.0f%%" : "%.1f%%", v);
}

static const char *row_label(const ms_heatmap_panel *p, int r, char *buf, size_t size) {
    if (p->row_labels && p->row_labels[r]) return p->row_labels[r];
    snprintf(buf, size, "%d", r);
    return buf;
}

static int has_cells(const ms_heatmap_panel *p) { return p->rows > 0 && p->cols > 0 && p->values; }

/* The value drawn in the top colour: the caller's vmax, else the largest finite value (0 when
 * there is none, which paints every cell in the bottom colour). */
static double panel_top(const ms_heatmap_panel *p) {
    if (p->vmax > 0) return p->vmax;
    double top = 0;
    if (has_cells(p))
        for (size_t i = 0; i < (size_t)p->rows * p->cols; i++)
            if (isfinite(p->values[i]) && p->values[i] > top) top = p->values[i];
    return top;
}

typedef struct {
    int x, y, h; /* panel's top-left corner and height */
    double top;  /* see panel_top */
} panel_box;

typedef struct {
    int width, height;
    int title_h;     /* image title band, 0 without a title */
    int label_w;     /* row-label column, shared by all panels */
    int cell_w;      /* shared cell pitch */
    int max_cols;    /* widest panel, in cells */
    int legend_w;    /* colour-bar labels */
    int panel_w;     /* one panel, shared */
    int max_title_c; /* characters of a panel title that fit panel_w */
    panel_box *box;  /* [n_panels] */
} layout;

static int grid_h(const ms_heatmap_panel *p) { return p->rows * CELL_H; }

static int bar_h(const ms_heatmap_panel *p) {
    return grid_h(p) - 1 > BAR_MIN_H ? grid_h(p) - 1 : BAR_MIN_H;
}

static int panel_h(const ms_heatmap_panel *p) {
    if (!has_cells(p)) return LINE + TITLE_GAP + LINE; /* title, "(no data)" */
    return LINE + TITLE_GAP + LINE + HEADER_GAP + bar_h(p);
}

static int imax(int a, int b) { return a > b ? a : b; }

static int plan(layout *L, const char *title, int n, const ms_heatmap_panel *panels) {
    memset(L, 0, sizeof *L);
    int label_c = (int)strlen("expert"), title_c = 0;
    L->cell_w = CELL_W;
    for (int i = 0; i < n; i++) {
        const ms_heatmap_panel *p = &panels[i];
        if (p->title) title_c = imax(title_c, (int)strlen(p->title));
        if (!has_cells(p)) continue;
        L->max_cols = imax(L->max_cols, p->cols);
        char buf[32];
        for (int r = 0; r < p->rows; r++) {
            int c = (int)strlen(row_label(p, r, buf, sizeof buf));
            label_c = imax(label_c, c > MS_HEATMAP_MAX_LABEL ? MS_HEATMAP_MAX_LABEL : c);
        }
        char lo[32], hi[32];
        format_percent(lo, sizeof lo, 0);
        format_percent(hi, sizeof hi, panel_top(p));
        L->legend_w = imax(L->legend_w, text_width(imax((int)strlen(lo), (int)strlen(hi)), TEXT));
    }
    L->label_w = text_width((size_t)label_c, TEXT);
    int fixed = L->label_w + LABEL_GAP + BAR_GAP + BAR_W + BAR_TEXT_GAP + L->legend_w;
    int room = MS_HEATMAP_MAX_WIDTH - 2 * MARGIN - fixed;
    if (L->max_cols > 0 && L->max_cols * L->cell_w > room)
        L->cell_w = imax(CELL_MIN_W, room / L->max_cols);
    int content_w = L->max_cols > 0 ? fixed + L->max_cols * L->cell_w : 0;
    int text_room = imax(content_w, MS_HEATMAP_MAX_WIDTH - 2 * MARGIN);
    L->panel_w = imax(content_w, imax(text_width((size_t)title_c, TEXT),
                                      text_width(strlen("(no panels)"), TEXT)));
    if (L->panel_w > text_room) L->panel_w = text_room;
    L->max_title_c = (L->panel_w + TEXT) / ((MS_FONT_W + 1) * TEXT);

    int ncol = n >= 4 && 2 * L->panel_w + COLUMN_GAP + 2 * MARGIN <= MS_HEATMAP_MAX_WIDTH ? 2 : 1;
    int body_w = ncol * L->panel_w + (ncol - 1) * COLUMN_GAP;
    int head_w = title ? text_width(strlen(title), TITLE_TEXT) : 0;
    L->width = 2 * MARGIN + imax(body_w, head_w < text_room ? head_w : text_room);
    L->title_h = title ? (MS_FONT_H + MS_FONT_DESCENT) * TITLE_TEXT + 20 : 0;

    L->box = calloc(n > 0 ? (size_t)n : 1, sizeof *L->box);
    if (!L->box) return -1;
    int y = MARGIN + L->title_h;
    for (int i = 0; i < n; i += ncol) {
        int row_h = 0;
        for (int j = i; j < n && j < i + ncol; j++) {
            L->box[j] = (panel_box){MARGIN + (j - i) * (L->panel_w + COLUMN_GAP), y,
                                    panel_h(&panels[j]), panel_top(&panels[j])};
            row_h = imax(row_h, L->box[j].h);
        }
        y += row_h + PANEL_GAP;
    }
    if (n == 0) y += LINE + PANEL_GAP; /* "(no panels)" */
    L->height = y - PANEL_GAP + MARGIN;
    return 0;
}

/* ---- panels ---------------------------------------------------------------------------------- */

static ms_heatmap_grid grid_of(const layout *L, const panel_box *b) {
    return (ms_heatmap_grid){b->x + L->label_w + LABEL_GAP, b->y + LINE + TITLE_GAP + LINE +
                             HEADER_GAP, L->cell_w, CELL_H};
}

/* Expert numbers over the columns, thinned to every step-th column when cells are narrower
 * than the numbers. */
static void draw_header(ms_image *im, const ms_heatmap_panel *p, ms_heatmap_grid g, int y) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", p->cols - 1);
    int need = text_width(strlen(buf), TEXT) + 4;
    int step = 1;
    while (step * g.cell_w < need) step++;
    for (int c = 0; c < p->cols; c += step) {
        snprintf(buf, sizeof buf, "%d", c);
        int w = text_width(strlen(buf), TEXT);
        ms_heatmap_text(im, g.x + c * g.cell_w + (g.cell_w - 1 - w) / 2, y, buf, TEXT, SOFT_INK);
    }
    int cw = text_width(strlen("expert"), TEXT);
    ms_heatmap_text(im, g.x - LABEL_GAP - cw, y, "expert", TEXT, SOFT_INK);
}

/* Values that round to 0 print nothing: the few experts a task leans on stand out, and the
 * bottom colour already says "about nothing". */
static int cell_number(double v, char *buf, size_t size) {
    if (!isfinite(v) || fabs(v) < 0.5) return 0;
    snprintf(buf, size, "%.0f", v);
    return 1;
}

/* One size for every number of a panel: x2 when its widest number fits a cell, else x1. */
static int number_scale(const ms_heatmap_panel *p, ms_heatmap_grid g) {
    size_t widest = 0;
    char num[32];
    for (size_t i = 0; i < (size_t)p->rows * p->cols; i++)
        if (cell_number(p->values[i], num, sizeof num) && strlen(num) > widest)
            widest = strlen(num);
    return text_width(widest, TEXT) <= g.cell_w - 6 ? TEXT : CELL_TEXT;
}

static void draw_cells(ms_image *im, const ms_heatmap_panel *p, ms_heatmap_grid g, double top) {
    static const uint8_t WHITE[3] = {255, 255, 255};
    char clipped[MS_HEATMAP_MAX_LABEL + 1], number[32], num[32];
    int s = number_scale(p, g);
    for (int r = 0; r < p->rows; r++) {
        const char *label = clip(clipped, sizeof clipped, row_label(p, r, number, sizeof number),
                                 MS_HEATMAP_MAX_LABEL);
        int y = g.y + r * g.cell_h;
        int lw = text_width(strlen(label), TEXT);
        ms_heatmap_text(im, g.x - LABEL_GAP - lw, y + (g.cell_h - 1 - LINE) / 2, label, TEXT,
                        INK);
        for (int c = 0; c < p->cols; c++) {
            double v = p->values[(size_t)r * p->cols + c];
            uint8_t rgb[3];
            ms_heatmap_color(isnan(v) ? NAN : top > 0 ? v / top : 0, rgb);
            int x = g.x + c * g.cell_w;
            fill_rect(im, x, y, g.cell_w - 1, g.cell_h - 1, rgb);
            if (!cell_number(v, num, sizeof num)) continue;
            int w = text_width(strlen(num), s);
            if (w > g.cell_w - 4 || MS_FONT_H * s > g.cell_h - 4) continue;
            /* Dark text on light cells, white on dark ones (Rec. 709 luma). */
            double luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
            ms_heatmap_text(im, x + (g.cell_w - w) / 2, y + (g.cell_h - MS_FONT_H * s) / 2, num, s,
                            luma < 120 ? WHITE : INK);
        }
    }
}

static void draw_bar(ms_image *im, const layout *L, const ms_heatmap_panel *p, ms_heatmap_grid g,
                     double top) {
    int x = g.x + L->max_cols * g.cell_w - 1 + BAR_GAP, h = bar_h(p);
    fill_rect(im, x - 1, g.y - 1, BAR_W + 2, h + 2, FRAME);
    for (int j = 0; j < h; j++) {
        uint8_t rgb[3];
        ms_heatmap_color(1 - (double)j / (h - 1), rgb);
        fill_rect(im, x, g.y + j, BAR_W, 1, rgb);
    }
    char buf[32];
    format_percent(buf, sizeof buf, top);
    ms_heatmap_text(im, x + BAR_W + BAR_TEXT_GAP, g.y, buf, TEXT, INK);
    format_percent(buf, sizeof buf, 0);
    ms_heatmap_text(im, x + BAR_W + BAR_TEXT_GAP, g.y + h - LINE, buf, TEXT, INK);
}

static void draw_panel(ms_image *im, const layout *L, const ms_heatmap_panel *p,
                       const panel_box *b) {
    char buf[256];
    if (p->title)
        ms_heatmap_text(im, b->x, b->y, clip(buf, sizeof buf, p->title, L->max_title_c), TEXT,
                        INK);
    if (!has_cells(p)) {
        ms_heatmap_text(im, b->x, b->y + LINE + TITLE_GAP, "(no data)", TEXT, SOFT_INK);
        return;
    }
    ms_heatmap_grid g = grid_of(L, b);
    draw_header(im, p, g, b->y + LINE + TITLE_GAP);
    draw_cells(im, p, g, b->top);
    draw_bar(im, L, p, g, b->top);
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int check(int n, const ms_heatmap_panel *panels, char *err, size_t cap) {
    if (n < 0 || n > MAX_PANELS || (n > 0 && !panels))
        return fail(err, cap, "heatmap: %d panels at %p, expected an array of 0..%d", n,
                    (const void *)panels, MAX_PANELS);
    for (int i = 0; i < n; i++) {
        const ms_heatmap_panel *p = &panels[i];
        if (p->rows < 0 || p->cols < 0 || p->rows > MAX_CELLS || p->cols > MAX_CELLS)
            return fail(err, cap, "heatmap panel %d (%s): %d x %d cells, expected 0..%d each", i,
                        p->title ? p->title : "untitled", p->rows, p->cols, MAX_CELLS);
    }
    return 0;
}

int ms_heatmap_render(const char *title, int n_panels, const ms_heatmap_panel *panels,
                      ms_image *im, ms_heatmap_grid *grids, char *err, size_t cap) {
    if (check(n_panels, panels, err, cap)) return -1;
    layout L;
    if (plan(&L, title, n_panels, panels))
        return fail(err, cap, "heatmap: out of memory laying out %d panels", n_panels);
    size_t bytes = (size_t)L.width * L.height * 3;
    if ((size_t)L.width * L.height > MAX_PIXELS) {
        free(L.box);
        return fail(err, cap, "heatmap: %d panels make a %dx%d image, more than %zu pixels",
                    n_panels, L.width, L.height, MAX_PIXELS);
    }
    if (bytes > im->capacity) {
        void *data = im->borrowed ? NULL : realloc(im->data, bytes);
        if (!data) {
            free(L.box);
            return fail(err, cap, "heatmap: cannot hold a %dx%d image (%zu bytes)", L.width,
                        L.height, bytes);
        }
        im->data = data;
        im->capacity = bytes;
    }
    im->width = L.width;
    im->height = L.height;
    im->channels = 3;
    im->depth = 8;
    memset(im->data, 255, bytes);

    if (title) {
        char buf[512];
        int max_c = (L.width - 2 * MARGIN + TITLE_TEXT) / ((MS_FONT_W + 1) * TITLE_TEXT);
        ms_heatmap_text(im, MARGIN, MARGIN, clip(buf, sizeof buf, title, max_c), TITLE_TEXT, INK);
    }
    if (n_panels == 0)
        ms_heatmap_text(im, MARGIN, MARGIN + L.title_h, "(no panels)", TEXT, SOFT_INK);
    for (int i = 0; i < n_panels; i++) {
        draw_panel(im, &L, &panels[i], &L.box[i]);
        if (grids) grids[i] = grid_of(&L, &L.box[i]);
    }
    free(L.box);
    return 0;
}

int ms_heatmap_write(const char *path, const char *title, int n_panels,
                     const ms_heatmap_panel *panels, char *err, size_t cap) {
    if (!path) return fail(err, cap, "heatmap: no output path");
    ms_image im;
    ms_image_init(&im);
    char why[512];
    if (ms_heatmap_render(title, n_panels, panels, &im, NULL, why, sizeof why)) {
        ms_image_free(&im);
        return fail(err, cap, "%s: %s", path, why);
    }
    ms_io_err io;
    int status = ms_png_write(path, &im, NULL, 0, 0, &io);
    ms_image_free(&im);
    /* ms_png_write's messages already begin with the path. */
    if (status) return fail(err, cap, "%s", io.msg);
    return 0;
}
