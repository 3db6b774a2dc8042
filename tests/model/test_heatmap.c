/* Heatmap PNGs: cell colours read back from the file, text drawn from the font, layout limits,
 * empty and NaN panels, and errors that name the path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/heatmap.h"
#include "../testutil.h"

/* The colour map's ends and middle, written out here (viridis at 0, 0.5 and 1) so that a
 * change to the ramp is caught rather than mirrored. */
static const uint8_t BOTTOM[3] = {68, 1, 84};
static const uint8_t MIDDLE[3] = {33, 145, 140};
static const uint8_t TOP[3] = {253, 231, 37};

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_heatmap_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static const uint8_t *pixel(const ms_image *im, int x, int y) {
    cr_assert(x >= 0 && x < im->width && y >= 0 && y < im->height, "pixel (%d, %d) outside %dx%d",
              x, y, im->width, im->height);
    return ms_image_u8(im) + ((size_t)y * im->width + x) * 3;
}

static void expect_rgb(const char *what, const uint8_t *got, const uint8_t want[3]) {
    cr_assert(got[0] == want[0] && got[1] == want[1] && got[2] == want[2],
              "%s: rgb(%d, %d, %d), expected rgb(%d, %d, %d)", what, got[0], got[1], got[2],
              want[0], want[1], want[2]);
}

/* A pixel of cell (r, c) clear of the number printed at its centre. */
static const uint8_t *cell(const ms_image *im, ms_heatmap_grid g, int r, int c) {
    return pixel(im, g.x + c * g.cell_w + 2, g.y + r * g.cell_h + 2);
}

static int dark(const uint8_t *p) { return p[0] + p[1] + p[2] < 3 * 100; }

static int dark_pixels(const ms_image *im, int x0, int y0, int x1, int y1) {
    int n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) n += dark(pixel(im, x, y));
    return n;
}

static void read_png(const char *path, ms_image *im) {
    ms_io_err io;
    ms_image_init(im);
    ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
    cr_assert_eq(ms_png_read(path, &want, im, &io), 0, "%s", io.msg);
}

/* Two panels: 3 tasks x 4 experts with its own max (100), and 2 x 3 with vmax = 200 and a
 * value above it. */
static const char *const TASKS[] = {"semseg", "depth", "a_task_name_far_longer_than_twenty"};
static const double A[3 * 4] = {100, 0, 50, 25, NAN, 10, 20, 30, 5, 5, 5, 5};
static const double B[2 * 3] = {100, 0, 300, 1, 2, 3};

static void two_panels(ms_heatmap_panel p[2]) {
    p[0] = (ms_heatmap_panel){"block 0 attention (E=4, k=2)", 3, 4, TASKS, A, 0};
    p[1] = (ms_heatmap_panel){"block 0 mlp (E=3, k=1)", 2, 3, TASKS, B, 200};
}

Test(heatmap, png_cells_have_the_map_colours) {
    make_dir();
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/usage.png", dir);
    ms_heatmap_panel p[2];
    two_panels(p);
    cr_assert_eq(ms_heatmap_write(path, "Expert usage", 2, p, err, sizeof err), 0, "%s", err);

    /* The same picture in memory gives the size and where the cells are. */
    ms_image mem;
    ms_image_init(&mem);
    ms_heatmap_grid g[2];
    cr_assert_eq(ms_heatmap_render("Expert usage", 2, p, &mem, g, err, sizeof err), 0, "%s", err);
    ms_image im;
    read_png(path, &im);
    cr_assert_eq(im.width, mem.width);
    cr_assert_eq(im.height, mem.height);
    cr_assert(im.width > 300 && im.width <= MS_HEATMAP_MAX_WIDTH, "width %d", im.width);
    cr_assert_eq(memcmp(im.data, mem.data, ms_image_bytes(&mem)), 0, "file differs from render");

    cr_assert(g[1].y > g[0].y + 3 * g[0].cell_h, "panels are not stacked");
    cr_assert_eq(g[0].x, g[1].x, "grids of stacked panels do not line up");
    cr_assert(g[0].cell_w >= 16 && g[0].cell_h >= 16, "cells of %dx%d", g[0].cell_w,
              g[0].cell_h);

    expect_rgb("max cell", cell(&im, g[0], 0, 0), TOP);
    expect_rgb("zero cell", cell(&im, g[0], 0, 1), BOTTOM);
    expect_rgb("half cell", cell(&im, g[0], 0, 2), MIDDLE);
    const uint8_t *nan = cell(&im, g[0], 1, 0);
    cr_assert(nan[0] == nan[1] && nan[1] == nan[2] && nan[0] > 100 && nan[0] < 230,
              "NaN cell: rgb(%d, %d, %d), expected a mid grey", nan[0], nan[1], nan[2]);
    uint8_t quarter[3];
    ms_heatmap_color(0.25, quarter);
    expect_rgb("quarter cell", cell(&im, g[0], 0, 3), quarter);
    cr_assert(quarter[2] > quarter[1] && quarter[0] < 100, "0.25 is not a blue-violet");

    /* vmax = 200: 100 is the middle, 300 saturates at the top. */
    expect_rgb("vmax middle", cell(&im, g[1], 0, 0), MIDDLE);
    expect_rgb("vmax zero", cell(&im, g[1], 0, 1), BOTTOM);
    expect_rgb("above vmax", cell(&im, g[1], 0, 2), TOP);

    /* The number inside the max cell is drawn in dark ink on the yellow. */
    int cx = g[0].x, cy = g[0].y;
    cr_assert(dark_pixels(&im, cx, cy, cx + g[0].cell_w - 1, cy + g[0].cell_h - 1) > 5,
              "no value printed in the max cell");

    /* Row labels sit left of the grid; the white gap separates cells. */
    cr_assert(dark_pixels(&im, 0, g[0].y, g[0].x, g[0].y + g[0].cell_h) > 20, "no row label");
    const uint8_t white[3] = {255, 255, 255};
    expect_rgb("gap between cells", pixel(&im, g[0].x + g[0].cell_w - 1, g[0].y + 2), white);
    ms_image_free(&im);
    ms_image_free(&mem);
}

Test(heatmap, title_is_drawn_from_the_font) {
    ms_heatmap_panel p[2];
    two_panels(p);
    ms_image im;
    ms_image_init(&im);
    ms_heatmap_grid g[2];
    char err[256];
    const char *title = "Expert usage";
    cr_assert_eq(ms_heatmap_render(title, 2, p, &im, g, err, sizeof err), 0, "%s", err);
    int s = MS_HEATMAP_TITLE_SCALE, m = MS_HEATMAP_MARGIN;
    cr_assert(dark_pixels(&im, 0, 0, im.width, m) == 0, "ink in the top margin");
    cr_assert(dark_pixels(&im, 0, m, im.width, m + MS_FONT_H * s) > 100, "no title");

    /* Every title pixel is ink exactly where the glyph has a dot; 'p' and 'g' hang lower. */
    for (size_t i = 0; i < strlen(title); i++)
        for (int y = 0; y < (MS_FONT_H + MS_FONT_DESCENT) * s; y++)
            for (int x = 0; x < MS_FONT_W * s; x++) {
                int dy = strchr("pg", title[i]) ? MS_FONT_DESCENT * s : 0;
                int ink = y >= dy && ms_font5x7_pixel(title[i], x / s, (y - dy) / s);
                const uint8_t *px = pixel(&im, m + (int)i * (MS_FONT_W + 1) * s + x, m + y);
                cr_assert_eq(dark(px), ink, "title char %zu '%c' pixel (%d, %d)", i, title[i], x,
                             y);
            }
    ms_image_free(&im);
}

Test(heatmap, glyph_renders_as_its_bitmap) {
    /* 'A' and '7' drawn independently of model/font5x7.c: both must come out dot for dot. */
    static const char *const want[2][MS_FONT_H] = {
        {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
        {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
    };
    enum { W = 40, H = 20, S = 2, X0 = 3, Y0 = 2 };
    uint8_t buf[W * H * 3];
    memset(buf, 255, sizeof buf);
    ms_image im;
    ms_image_init(&im);
    ms_image_borrow(&im, buf, sizeof buf);
    im.width = W, im.height = H, im.channels = 3, im.depth = 8;
    const uint8_t red[3] = {200, 0, 0};
    int w = ms_heatmap_text(&im, X0, Y0, "A7", S, red);
    cr_assert_eq(w, (2 * (MS_FONT_W + 1) - 1) * S);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int gx = x - X0, gy = y - Y0, ch = gx / ((MS_FONT_W + 1) * S);
            int col = gx % ((MS_FONT_W + 1) * S) / S, row = gy / S;
            int ink = gx >= 0 && gy >= 0 && ch < 2 && col < MS_FONT_W && row < MS_FONT_H &&
                      want[ch][row][col] == '#';
            const uint8_t *px = buf + (y * W + x) * 3;
            cr_assert_eq(px[0] == 200 && px[1] == 0, ink, "pixel (%d, %d): %d %d %d", x, y, px[0],
                         px[1], px[2]);
        }

    /* Drawing past the edge clips instead of writing outside the image. */
    ms_heatmap_text(&im, W - 4, H - 5, "WWW", 3, red);
    ms_heatmap_text(&im, -7, -9, "WWW", 3, red);
}

Test(heatmap, font_covers_printable_ascii) {
    int ink[128] = {0};
    for (int c = 32; c <= 126; c++)
        for (int y = 0; y < MS_FONT_H; y++)
            for (int x = 0; x < MS_FONT_W; x++) ink[c] += ms_font5x7_pixel(c, x, y);
    for (int c = 33; c <= 126; c++) cr_assert(ink[c] > 0, "glyph '%c' is blank", c);
    cr_assert_eq(ink[' '], 0, "space has ink");
    /* No two glyphs alike: a copy-paste slip would make two characters unreadable apart. */
    for (int a = 33; a <= 126; a++)
        for (int b = a + 1; b <= 126; b++) {
            int same = 1;
            for (int y = 0; y < MS_FONT_H && same; y++)
                for (int x = 0; x < MS_FONT_W && same; x++)
                    same = ms_font5x7_pixel(a, x, y) == ms_font5x7_pixel(b, x, y);
            cr_assert(!same, "'%c' and '%c' have the same glyph", a, b);
        }
    for (int y = 0; y < MS_FONT_H; y++)
        for (int x = 0; x < MS_FONT_W; x++) {
            cr_assert_eq(ms_font5x7_pixel(7, x, y), ms_font5x7_pixel('?', x, y));
            cr_assert_eq(ms_font5x7_pixel(200, x, y), ms_font5x7_pixel('?', x, y));
        }
    cr_assert_eq(ms_font5x7_pixel('A', 5, 0), 0);
    cr_assert_eq(ms_font5x7_pixel('A', 0, -1), 0);
}

Test(heatmap, colour_map_is_ordered) {
    uint8_t rgb[3];
    ms_heatmap_color(0, rgb);
    expect_rgb("t = 0", rgb, BOTTOM);
    ms_heatmap_color(1, rgb);
    expect_rgb("t = 1", rgb, TOP);
    ms_heatmap_color(-3, rgb);
    expect_rgb("t < 0", rgb, BOTTOM);
    ms_heatmap_color(7, rgb);
    expect_rgb("t > 1", rgb, TOP);
    /* Perceptual order: luma rises strictly along the ramp. */
    double last = -1;
    for (int i = 0; i <= 64; i++) {
        ms_heatmap_color(i / 64.0, rgb);
        double luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
        cr_assert(luma > last, "luma falls at t = %g", i / 64.0);
        last = luma;
    }
}

Test(heatmap, empty_and_nan_panels) {
    make_dir();
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/empty.png", dir);
    static const double nans[2 * 2] = {NAN, NAN, NAN, NAN};
    static const double zeros[1 * 3] = {0, 0, 0};
    ms_heatmap_panel p[4] = {
        {"no rows", 0, 5, NULL, NULL, 0},
        {"all NaN", 2, 2, NULL, nans, 0},
        {"no values", 2, 2, NULL, NULL, 0},
        {NULL, 1, 3, NULL, zeros, 0},
    };
    cr_assert_eq(ms_heatmap_write(path, NULL, 4, p, err, sizeof err), 0, "%s", err);
    ms_image im;
    read_png(path, &im);
    ms_image mem;
    ms_image_init(&mem);
    ms_heatmap_grid g[4];
    cr_assert_eq(ms_heatmap_render(NULL, 4, p, &mem, g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.width, mem.width);
    cr_assert_eq(im.height, mem.height);
    uint8_t grey[3];
    ms_heatmap_color(NAN, grey);
    expect_rgb("NaN panel", cell(&im, g[1], 1, 1), grey);
    expect_rgb("all-zero panel", cell(&im, g[3], 0, 2), BOTTOM);
    ms_image_free(&im);

    /* No panels at all is a title and a note, not an error. */
    cr_assert_eq(ms_heatmap_render("nothing", 0, NULL, &mem, NULL, err, sizeof err), 0, "%s",
                 err);
    cr_assert(mem.width > 0 && mem.height > 0);
    ms_image_free(&mem);
}

Test(heatmap, many_panels_use_two_columns) {
    enum { N = 8, T = 3, E = 16 };
    static double v[T * E];
    for (int i = 0; i < T * E; i++) v[i] = i % 7;
    ms_heatmap_panel p[N];
    char titles[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(titles[i], sizeof titles[i], "block %d %s (E=%d, k=4)", i / 2,
                 i % 2 ? "mlp" : "attention", E);
        p[i] = (ms_heatmap_panel){titles[i], T, E, TASKS, v, 0};
    }
    ms_image im;
    ms_image_init(&im);
    ms_heatmap_grid g[N];
    char err[256];
    cr_assert_eq(ms_heatmap_render("usage", N, p, &im, g, err, sizeof err), 0, "%s", err);
    cr_assert(im.width <= MS_HEATMAP_MAX_WIDTH, "width %d", im.width);
    cr_assert_eq(g[0].y, g[1].y, "panels 0 and 1 are not side by side");
    cr_assert(g[1].x > g[0].x + E * g[0].cell_w, "panel 1 overlaps panel 0");
    cr_assert_eq(g[2].x, g[0].x);
    cr_assert(g[2].y > g[0].y + T * g[0].cell_h);
    cr_assert(g[N - 1].y + T * g[N - 1].cell_h <= im.height);
    ms_image_free(&im);
}

Test(heatmap, wide_panels_stay_within_the_width) {
    enum { T = 2 };
    static double v[T * 64], w[T * 600];
    for (int i = 0; i < T * 64; i++) v[i] = i;
    for (int i = 0; i < T * 600; i++) w[i] = i % 13;
    ms_heatmap_panel p = {"64 experts", T, 64, NULL, v, 0};
    ms_image im;
    ms_image_init(&im);
    ms_heatmap_grid g;
    char err[256];
    cr_assert_eq(ms_heatmap_render("wide", 1, &p, &im, &g, err, sizeof err), 0, "%s", err);
    cr_assert(im.width <= MS_HEATMAP_MAX_WIDTH, "width %d with 64 experts", im.width);
    cr_assert(g.cell_w >= 16, "cells of %d px with 64 experts", g.cell_w);
    expect_rgb("last expert", cell(&im, g, T - 1, 63), TOP);
    /* Hundreds of columns: cells narrow to their minimum and the picture is still whole. */
    p = (ms_heatmap_panel){"600 columns", T, 600, NULL, w, 0};
    cr_assert_eq(ms_heatmap_render(NULL, 1, &p, &im, &g, err, sizeof err), 0, "%s", err);
    cr_assert(g.cell_w >= 6 && g.x + 600 * g.cell_w <= im.width);
    expect_rgb("column 12", cell(&im, g, 0, 12), TOP);
    ms_image_free(&im);
}

Test(heatmap, errors_name_the_path_or_panel) {
    ms_heatmap_panel p[2];
    two_panels(p);
    char err[512] = "";
    const char *bad = "/nonexistent_ms_heatmap_dir/sub/usage.png";
    cr_assert_eq(ms_heatmap_write(bad, "t", 2, p, err, sizeof err), -1);
    cr_assert(strstr(err, bad), "message does not name the path: %s", err);

    p[1].cols = -2;
    err[0] = '\0';
    cr_assert_eq(ms_heatmap_write("/tmp/ms_heatmap_never.png", "t", 2, p, err, sizeof err), -1);
    cr_assert(strstr(err, "/tmp/ms_heatmap_never.png") && strstr(err, "panel 1") &&
                  strstr(err, "block 0 mlp"),
              "message: %s", err);
    cr_assert_eq(ms_heatmap_write("/tmp/ms_heatmap_never.png", "t", 1, NULL, err, sizeof err), -1);
    cr_assert_eq(ms_heatmap_write(NULL, "t", 2, p, err, sizeof err), -1);
    cr_assert_eq(ms_heatmap_write("/tmp/ms_heatmap_never.png", "t", -1, p, err, sizeof err), -1);

    /* Thousands of tall panels: refused with the size, not a giant allocation. */
    enum { N = 4096, T = 1024 };
    static double v[T];
    static ms_heatmap_panel tall[N];
    for (int i = 0; i < N; i++) tall[i] = (ms_heatmap_panel){"tall", T, 1, NULL, v, 0};
    cr_assert_eq(ms_heatmap_write("/tmp/ms_heatmap_never.png", "t", N, tall, err, sizeof err), -1);
    cr_assert(strstr(err, "/tmp/ms_heatmap_never.png") && strstr(err, "pixels"), "message: %s",
              err);
    FILE *f = fopen("/tmp/ms_heatmap_never.png", "rb");
    cr_assert_null(f, "a failed call left a file behind");
}

/* A realistic picture for a person to look at: 3 tasks x 2 MoE layers x 16 experts, each row a
 * distribution over experts in percent (sums to 100), with some experts shared and some
 * specialised, as a trained Mod-Squad model shows. */
Test(heatmap, example_for_people) {
    enum { T = 3, E = 16 };
    static const char *const tasks[T] = {"semseg", "depth_euclidean", "normal"};
    static double v[2][T * E];
    tu_rng r = tu_seed(7);
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int e = 0; e < E; e++) {
                int shared = e % 5 == 0, own = e % T == t && !shared;
                double base = shared ? 6 : own ? 4 + 3 * (l + 1) : 0.3;
                v[l][t * E + e] = base * (0.5 + tu_uniform(&r));
                sum += v[l][t * E + e];
            }
            for (int e = 0; e < E; e++) v[l][t * E + e] *= 100 / sum;
        }
    v[1][2 * E + 15] = NAN; /* a layer the task never reached, for the grey */
    ms_heatmap_panel p[2] = {
        {"block 0 attention (E=16, k=4)", T, E, tasks, v[0], 0},
        {"block 0 mlp (E=16, k=4)", T, E, tasks, v[1], 0},
    };
    char err[512];
    const char *path = "/tmp/heatmap_example.png";
    cr_assert_eq(ms_heatmap_write(path, "Expert usage per task (% of selections)", 2, p, err,
                                  sizeof err),
                 0, "%s", err);
    ms_image im;
    read_png(path, &im);
    cr_assert(im.width > 400 && im.width < 1200 && im.height > 200 && im.height < 800,
              "example of %dx%d", im.width, im.height);
    ms_image_free(&im);
}
