/* PNG (libpng) and JPEG (libjpeg-turbo) codecs, plus the error and atomic-write helpers that
 * every data/ codec shares. Semantics are documented in image.h. */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_IS_BIG_ENDIAN 1
#else
#define HOST_IS_BIG_ENDIAN 0
#endif

/* ---- errors ---------------------------------------------------------------------------------- */

int ms_io_fail(ms_io_err *err, ms_io_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

/* strerror is not thread-safe and loader workers report errors concurrently. */
static const char *errno_text(int e, char *buf, size_t n) {
    if (strerror_r(e, buf, n) != 0) snprintf(buf, n, "errno %d", e);
    return buf;
}

static int fail_errno(ms_io_err *err, ms_io_status status, const char *path, const char *what) {
    char eb[128];
    return ms_io_fail(err, status, "%s: %s: %s", path, what, errno_text(errno, eb, sizeof eb));
}

/* ---- atomic writes --------------------------------------------------------------------------- */

/* mkstemp creates files 0600; a written dataset must get the mode an ordinary open() would give
 * (0666 minus the umask). The umask is read from /proc rather than with umask(), which would
 * briefly change it under other threads. */
static mode_t g_file_mode = 0644;
static pthread_once_t g_file_mode_once = PTHREAD_ONCE_INIT;

static void read_file_mode(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned mask;
        if (sscanf(line, "Umask: %o", &mask) == 1) {
            g_file_mode = (mode_t)(0666 & ~mask);
            break;
        }
    }
    fclose(f);
}

int ms_atomic_begin(ms_atomic *a, const char *path, FILE **fp, ms_io_err *err) {
    pthread_once(&g_file_mode_once, read_file_mode);
    a->path = path;
    a->tmp[0] = '\0';
    if (fp) *fp = NULL;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    if (!*base) return ms_io_fail(err, MS_IO_ARG, "%s: not a file name", path);
    int n = snprintf(a->tmp, sizeof a->tmp, "%.*s.%s.tmp-XXXXXX", dir_len, path, base);
    if (n < 0 || (size_t)n >= sizeof a->tmp)
        return ms_io_fail(err, MS_IO_ARG, "%s: path too long", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        a->tmp[0] = '\0';
        return fail_errno(err, MS_IO_OPEN, path, "cannot create a temporary file beside it");
    }
    if (fchmod(fd, g_file_mode) != 0) {
        int status = fail_errno(err, MS_IO_WRITE, path, "cannot set the file mode");
        close(fd);
        unlink(a->tmp);
        a->tmp[0] = '\0';
        return status;
    }
    if (!fp) {
        close(fd);
        return MS_IO_OK;
    }
    *fp = fdopen(fd, "wb");
    if (!*fp) {
        int status = fail_errno(err, MS_IO_NOMEM, path, "cannot open a stream");
        close(fd);
        unlink(a->tmp);
        a->tmp[0] = '\0';
        return status;
    }
    return MS_IO_OK;
}

void ms_atomic_abort(ms_atomic *a, FILE *fp) {
    if (fp) fclose(fp);
    if (a->tmp[0]) unlink(a->tmp);
    a->tmp[0] = '\0';
}

static int fsync_path(const char *p, int flags) {
    int fd = open(p, O_RDONLY | flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int ms_atomic_commit(ms_atomic *a, FILE *fp, int flags, ms_io_err *err) {
    int sync = !(flags & MS_IO_NOSYNC);
    if (fp) {
        if (fflush(fp) != 0 || ferror(fp)) {
            int status = fail_errno(err, MS_IO_WRITE, a->path, "write failed");
            ms_atomic_abort(a, fp);
            return status;
        }
        if (sync && fsync(fileno(fp)) != 0) {
            int status = fail_errno(err, MS_IO_WRITE, a->path, "fsync failed");
            ms_atomic_abort(a, fp);
            return status;
        }
        if (fclose(fp) != 0) {
            int status = fail_errno(err, MS_IO_WRITE, a->path, "close failed");
            ms_atomic_abort(a, NULL);
            return status;
        }
    } else if (sync && fsync_path(a->tmp, 0) != 0) {
        int status = fail_errno(err, MS_IO_WRITE, a->path, "fsync failed");
        ms_atomic_abort(a, NULL);
        return status;
    }
    if (rename(a->tmp, a->path) != 0) {
        int status =
            fail_errno(err, MS_IO_WRITE, a->path, "cannot rename the temporary file over it");
        ms_atomic_abort(a, NULL);
        return status;
    }
    a->tmp[0] = '\0';
    if (sync) {
        /* The rename is durable only once the directory entry is. */
        char dir[sizeof a->tmp];
        const char *slash = strrchr(a->path, '/');
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == a->path)
            snprintf(dir, sizeof dir, "/");
        else
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - a->path), a->path);
        if (fsync_path(dir, O_DIRECTORY) != 0)
            return fail_errno(err, MS_IO_WRITE, a->path, "fsync of its directory failed");
    }
    return MS_IO_OK;
}

/* ---- ms_image -------------------------------------------------------------------------------- */

void ms_image_init(ms_image *im) { memset(im, 0, sizeof *im); }

void ms_image_borrow(ms_image *im, void *buf, size_t bytes) {
    if (!im->borrowed) free(im->data);
    im->data = buf;
    im->capacity = bytes;
    im->borrowed = 1;
}

void ms_image_free(ms_image *im) {
    if (!im->borrowed) free(im->data);
    free(im->scratch);
    ms_image_init(im);
}

size_t ms_image_bytes(const ms_image *im) {
    return (size_t)im->width * (size_t)im->height * (size_t)im->channels * (size_t)(im->depth / 8);
}

/* Sets the dimensions and makes sure data holds them, growing an owned buffer only. */
static int image_shape(ms_image *im, const char *path, int w, int h, int c, int depth,
                       ms_io_err *err) {
    size_t bytes;
    if (__builtin_mul_overflow((size_t)w, (size_t)h, &bytes) ||
        __builtin_mul_overflow(bytes, (size_t)c * (size_t)(depth / 8), &bytes))
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: image of %dx%d is too large", path, w, h);
    if (bytes > im->capacity) {
        if (im->borrowed)
            return ms_io_fail(err, MS_IO_MISMATCH,
                              "%s: %dx%dx%d %d-bit image needs %zu bytes, the caller's buffer "
                              "holds %zu",
                              path, w, h, c, depth, bytes, im->capacity);
        void *p = realloc(im->data, bytes);
        if (!p)
            return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory for %zu bytes of pixels", path,
                              bytes);
        im->data = p;
        im->capacity = bytes;
    }
    im->width = w;
    im->height = h;
    im->channels = c;
    im->depth = depth;
    return MS_IO_OK;
}

static void *image_scratch(ms_image *im, size_t bytes) {
    if (bytes > im->scratch_capacity) {
        void *p = realloc(im->scratch, bytes);
        if (!p) return NULL;
        im->scratch = p;
        im->scratch_capacity = bytes;
    }
    return im->scratch;
}

static const ms_img_want k_want_any = {MS_IMG_LABEL, 0, 0, 0, 0, 0};

static int check_want(const ms_img_want *want, const char *path, ms_io_err *err) {
    if (want->mode != MS_IMG_LABEL && want->mode != MS_IMG_COLOR)
        return ms_io_fail(err, MS_IO_ARG, "%s: unknown decoding mode %d", path, (int)want->mode);
    if (want->mode == MS_IMG_COLOR) {
        if (want->channels != 0 && want->channels != 1 && want->channels != 3)
            return ms_io_fail(err, MS_IO_ARG, "%s: colour decoding gives 1 or 3 channels, not %d",
                              path, want->channels);
        if (want->depth != 0 && want->depth != 8)
            return ms_io_fail(err, MS_IO_ARG, "%s: colour decoding gives 8-bit samples, not %d",
                              path, want->depth);
    } else {
        if (want->channels < 0 || want->channels > 4)
            return ms_io_fail(err, MS_IO_ARG, "%s: cannot ask for %d channels", path,
                              want->channels);
        if (want->depth != 0 && want->depth != 8 && want->depth != 16)
            return ms_io_fail(err, MS_IO_ARG, "%s: cannot ask for %d-bit samples", path,
                              want->depth);
    }
    if (want->width < 0 || want->height < 0)
        return ms_io_fail(err, MS_IO_ARG, "%s: negative expected size", path);
    return MS_IO_OK;
}

static int check_size(const ms_img_want *want, const char *path, const char *kind, long w, long h,
                      ms_io_err *err) {
    if ((want->width && w != want->width) || (want->height && h != want->height))
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: %s is %ldx%ld, expected %dx%d", path, kind, w,
                          h, want->width ? want->width : (int)w,
                          want->height ? want->height : (int)h);
    return MS_IO_OK;
}

static int open_read(const char *path, FILE **fp, uint8_t sig[8], size_t *sig_n, ms_io_err *err) {
    *fp = fopen(path, "rb");
    if (!*fp) return fail_errno(err, MS_IO_OPEN, path, "cannot open");
    *sig_n = fread(sig, 1, 8, *fp);
    if (ferror(*fp)) {
        int status = fail_errno(err, MS_IO_OPEN, path, "cannot read");
        fclose(*fp);
        *fp = NULL;
        return status;
    }
    return MS_IO_OK;
}

static int is_png_sig(const uint8_t *sig, size_t n) {
    return n == 8 && png_sig_cmp(sig, 0, 8) == 0;
}
static int is_jpeg_sig(const uint8_t *sig, size_t n) {
    return n >= 3 && sig[0] == 0xFF && sig[1] == 0xD8 && sig[2] == 0xFF;
}

/* ---- PNG decoding ---------------------------------------------------------------------------- */

typedef struct {
    const char *path;
    char libmsg[256]; /* libpng's own words for the failure */
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *ctx = (png_ctx *)png_get_error_ptr(png);
    snprintf(ctx->libmsg, sizeof ctx->libmsg, "%s", msg);
    png_longjmp(png, 1);
}

/* Benign complaints (odd sRGB profiles, bad ancillary CRCs) must not flood worker output. */
static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* How raw rows (after unpacking low bit depths and swapping 16-bit to host order) become
 * output rows. */
typedef struct {
    int rc, rd;         /* raw channels, raw bits per sample (8 or 16) */
    int oc, od;         /* output channels and bits per sample */
    int map[4];         /* output channel c copies raw channel map[c] */
    int use_lut;        /* 8-bit samples go through lut (low-bit grey scaling) */
    uint8_t lut[256];   /* raw 8-bit value -> output value */
    int expand_palette; /* raw index -> 3 output samples from palette */
    uint8_t palette[256][3];
    int high_byte; /* 16-bit raw -> 8-bit output: keep the high byte (PIL "RGB;16B") */
} png_plan;

static int png_plan_direct(const png_plan *p) {
    if (p->oc != p->rc || p->od != p->rd || p->use_lut || p->expand_palette || p->high_byte)
        return 0;
    for (int c = 0; c < p->oc; c++)
        if (p->map[c] != c) return 0;
    return 1;
}

static void png_convert_row(const png_plan *p, const void *src_row, void *dst_row, size_t w) {
    if (p->expand_palette) {
        const uint8_t *s = src_row;
        uint8_t *d = dst_row;
        for (size_t x = 0; x < w; x++) {
            const uint8_t *rgb = p->palette[s[x]];
            d[3 * x + 0] = rgb[0];
            d[3 * x + 1] = rgb[1];
            d[3 * x + 2] = rgb[2];
        }
    } else if (p->rd == 8) {
        const uint8_t *s = src_row;
        uint8_t *d = dst_row;
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < p->oc; c++) d[x * p->oc + c] = p->lut[s[x * p->rc + p->map[c]]];
    } else if (p->od == 16) {
        const uint16_t *s = src_row;
        uint16_t *d = dst_row;
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < p->oc; c++) d[x * p->oc + c] = s[x * p->rc + p->map[c]];
    } else {
        const uint16_t *s = src_row;
        uint8_t *d = dst_row;
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < p->oc; c++)
                d[x * p->oc + c] = (uint8_t)(s[x * p->rc + p->map[c]] >> 8);
    }
}

static const char *png_type_name(int color_type) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return "grey";
    case PNG_COLOR_TYPE_GRAY_ALPHA: return "grey+alpha";
    case PNG_COLOR_TYPE_RGB: return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA: return "RGBA";
    case PNG_COLOR_TYPE_PALETTE: return "palette";
    default: return "unknown";
    }
}

/* Decides the output layout from the header and the caller's wants; mismatches are errors. */
static int png_make_plan(png_structp png, png_infop info, const ms_img_want *want, const char *path,
                         png_plan *p, ms_io_err *err) {
    int bit_depth = png_get_bit_depth(png, info);
    int type = png_get_color_type(png, info);
    int has_alpha = (type & PNG_COLOR_MASK_ALPHA) != 0;
    memset(p, 0, sizeof *p);
    p->rc = png_get_channels(png, info);
    p->rd = bit_depth == 16 ? 16 : 8;
    for (int v = 0; v < 256; v++) p->lut[v] = (uint8_t)v;

    if (want->mode == MS_IMG_LABEL) {
        if (want->depth && want->depth != p->rd)
            return ms_io_fail(err, MS_IO_MISMATCH, "%s: %d-bit %s PNG, expected %d-bit", path,
                              bit_depth, png_type_name(type), want->depth);
        p->od = p->rd;
        p->oc = has_alpha && !want->keep_alpha ? p->rc - 1 : p->rc;
        for (int c = 0; c < p->oc; c++) p->map[c] = c;
        if (type == PNG_COLOR_TYPE_GRAY && (bit_depth == 2 || bit_depth == 4)) {
            int scale = bit_depth == 2 ? 0x55 : 0x11; /* Pillow's "L;2" / "L;4" unpackers */
            for (int v = 0; v < (1 << bit_depth); v++) p->lut[v] = (uint8_t)(v * scale);
            p->use_lut = 1;
        }
        if (want->channels && want->channels != p->oc)
            return ms_io_fail(err, MS_IO_MISMATCH, "%s: %s PNG has %d channel%s%s, expected %d",
                              path, png_type_name(type), p->oc, p->oc == 1 ? "" : "s",
                              has_alpha && !want->keep_alpha ? " after dropping alpha" : "",
                              want->channels);
        return MS_IO_OK;
    }

    /* MS_IMG_COLOR */
    int colour = (type & PNG_COLOR_MASK_COLOR) != 0; /* RGB, RGBA and palette */
    p->od = 8;
    p->oc = want->channels ? want->channels : 3;
    if (p->oc == 1 && colour)
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: %s PNG is in colour, expected 1 grey channel",
                          path, png_type_name(type));
    for (int c = 0; c < p->oc; c++) p->map[c] = colour ? c : 0;
    if (type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int n = 0;
        if (!png_get_PLTE(png, info, &plte, &n))
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: palette PNG without a PLTE chunk", path);
        for (int i = 0; i < n && i < 256; i++) {
            p->palette[i][0] = plte[i].red;
            p->palette[i][1] = plte[i].green;
            p->palette[i][2] = plte[i].blue;
        }
        p->expand_palette = 1;
    } else if (p->rd == 16) {
        p->high_byte = 1;
    } else if (type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
        int scale = bit_depth == 1 ? 0xFF : bit_depth == 2 ? 0x55 : 0x11;
        for (int v = 0; v < (1 << bit_depth); v++) p->lut[v] = (uint8_t)(v * scale);
        p->use_lut = 1;
    }
    return MS_IO_OK;
}

/* Everything between setjmp and the end of decoding. On a libpng error control returns here a
 * second time; locals set after setjmp are not read on that path, only the arguments. */
static int png_decode_body(png_structp png, png_infop info, FILE *fp, png_ctx *ctx,
                           const ms_img_want *want, ms_image *im, ms_io_err *err) {
    if (setjmp(png_jmpbuf(png)))
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: corrupt or truncated PNG (libpng: %s)",
                          ctx->path, ctx->libmsg);
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int bit_depth = png_get_bit_depth(png, info);
    int status = check_size(want, ctx->path, "PNG", (long)w, (long)h, err);
    if (status) return status;
    png_plan plan;
    status = png_make_plan(png, info, want, ctx->path, &plan, err);
    if (status) return status;

    if (bit_depth < 8) png_set_packing(png);
    if (bit_depth == 16 && !HOST_IS_BIG_ENDIAN) png_set_swap(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t raw_row = png_get_rowbytes(png, info);
    if (raw_row != (size_t)w * (size_t)plan.rc * (size_t)(plan.rd / 8))
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: unexpected PNG row layout", ctx->path);

    status = image_shape(im, ctx->path, (int)w, (int)h, plan.oc, plan.od, err);
    if (status) return status;
    uint8_t *out = im->data;
    size_t out_row = (size_t)w * (size_t)plan.oc * (size_t)(plan.od / 8);
    int direct = png_plan_direct(&plan);

    if (passes == 1) {
        uint8_t *raw = direct ? NULL : image_scratch(im, raw_row);
        if (!direct && !raw) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", ctx->path);
        for (png_uint_32 y = 0; y < h; y++) {
            if (direct) {
                png_read_row(png, out + y * out_row, NULL);
            } else {
                png_read_row(png, raw, NULL);
                png_convert_row(&plan, raw, out + y * out_row, w);
            }
        }
    } else {
        /* Adam7 fills every row several times, so the whole raw image must be at hand. */
        size_t ptr_bytes = (size_t)h * sizeof(png_bytep);
        size_t raw_bytes = direct ? 0 : (size_t)h * raw_row;
        uint8_t *scratch = image_scratch(im, ptr_bytes + raw_bytes);
        if (!scratch) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", ctx->path);
        png_bytep *rows = (png_bytep *)scratch;
        uint8_t *raw = scratch + ptr_bytes;
        for (png_uint_32 y = 0; y < h; y++)
            rows[y] = direct ? out + y * out_row : raw + y * raw_row;
        png_read_image(png, rows);
        if (!direct)
            for (png_uint_32 y = 0; y < h; y++)
                png_convert_row(&plan, raw + y * raw_row, out + y * out_row, w);
    }
    png_read_end(png, NULL);
    return MS_IO_OK;
}

static int png_decode(FILE *fp, const char *path, const ms_img_want *want, ms_image *im,
                      ms_io_err *err) {
    png_ctx ctx = {.path = path, .libmsg = ""};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    if (!png) return ms_io_fail(err, MS_IO_NOMEM, "%s: cannot create a PNG decoder", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ms_io_fail(err, MS_IO_NOMEM, "%s: cannot create a PNG decoder", path);
    }
    /* Labels carry no meaningful ICC profile; skipping the check saves time and noise. */
    png_set_option(png, PNG_SKIP_sRGB_CHECK_PROFILE, PNG_OPTION_ON);
    int status = png_decode_body(png, info, fp, &ctx, want, im, err);
    png_destroy_read_struct(&png, &info, NULL);
    return status;
}

/* ---- JPEG decoding --------------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub; /* first, so libjpeg's pointer is also ours */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err_ctx *e = (jpeg_err_ctx *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* libjpeg pads a truncated file with grey and only warns; a truncated file is an error here
 * (PIL raises "image file is truncated" too). Other corrupt-data warnings are recoverable and,
 * as with PIL, ignored. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

static void jpeg_errors(jpeg_err_ctx *e, struct jpeg_error_mgr **slot) {
    memset(e, 0, sizeof *e);
    *slot = jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_on_error;
    e->pub.emit_message = jpeg_on_message;
}

/* Everything after setjmp; on a libjpeg error only the arguments are read again. */
static int jpeg_decode_body(struct jpeg_decompress_struct *cinfo, jpeg_err_ctx *jerr, FILE *fp,
                            const char *path, const ms_img_want *want, ms_image *im,
                            ms_io_err *err) {
    if (setjmp(jerr->jump))
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: corrupt or truncated JPEG (libjpeg: %s)", path,
                          jerr->msg);
    jpeg_create_decompress(cinfo);
    jpeg_stdio_src(cinfo, fp);
    jpeg_read_header(cinfo, TRUE);
    int status =
        check_size(want, path, "JPEG", (long)cinfo->image_width, (long)cinfo->image_height, err);
    if (status) return status;
    int file_c;
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE: file_c = 1; break;
    case JCS_YCbCr:
    case JCS_RGB: file_c = 3; break;
    default:
        return ms_io_fail(err, MS_IO_UNSUPPORTED,
                          "%s: JPEG in colour space %d (CMYK/YCCK?), expected grey or RGB", path,
                          (int)cinfo->jpeg_color_space);
    }
    if (want->depth && want->depth != 8)
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: JPEG holds 8-bit samples, expected %d-bit",
                          path, want->depth);
    int oc = want->channels ? want->channels : (want->mode == MS_IMG_COLOR ? 3 : file_c);
    if (oc != 1 && oc != 3)
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: JPEG gives 1 or 3 channels, expected %d", path,
                          oc);
    if (oc == 1 && file_c == 3)
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: colour JPEG, expected 1 grey channel", path);
    cinfo->out_color_space = oc == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(cinfo);
    if (cinfo->output_components != oc)
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: libjpeg gave %d channels, expected %d", path,
                          cinfo->output_components, oc);
    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    status = image_shape(im, path, w, h, oc, 8, err);
    if (status) return status;
    size_t stride = (size_t)w * (size_t)oc;
    uint8_t *out = im->data;
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW rows[16]; /* libjpeg decodes at most rec_outbuf_height (<= 4) rows per call */
        JDIMENSION first = cinfo->output_scanline;
        JDIMENSION n = cinfo->output_height - first < 16 ? cinfo->output_height - first : 16;
        for (JDIMENSION i = 0; i < n; i++) rows[i] = out + (size_t)(first + i) * stride;
        jpeg_read_scanlines(cinfo, rows, n);
    }
    jpeg_finish_decompress(cinfo);
    return MS_IO_OK;
}

static int jpeg_decode(FILE *fp, const char *path, const ms_img_want *want, ms_image *im,
                       ms_io_err *err) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err_ctx jerr;
    memset(&cinfo, 0, sizeof cinfo); /* so destroy is safe whatever point decoding reached */
    jpeg_errors(&jerr, &cinfo.err);
    int status = jpeg_decode_body(&cinfo, &jerr, fp, path, want, im, err);
    jpeg_destroy_decompress(&cinfo);
    return status;
}

enum { ACCEPT_PNG = 1, ACCEPT_JPEG = 2 };

/* Opens path, checks its signature against what the caller accepts and decodes it. */
static int read_image(const char *path, int accept, const ms_img_want *want, ms_image *im,
                      ms_io_err *err) {
    if (!want) want = &k_want_any;
    int status = check_want(want, path, err);
    if (status) return status;
    FILE *fp = NULL;
    uint8_t sig[8];
    size_t n = 0;
    status = open_read(path, &fp, sig, &n, err);
    if (status) return status;
    if ((accept & ACCEPT_PNG) && is_png_sig(sig, n))
        status = png_decode(fp, path, want, im, err);
    else if ((accept & ACCEPT_JPEG) && is_jpeg_sig(sig, n))
        status = fseek(fp, 0, SEEK_SET) == 0 ? jpeg_decode(fp, path, want, im, err)
                                             : fail_errno(err, MS_IO_OPEN, path, "cannot seek");
    else
        status = ms_io_fail(err, MS_IO_CORRUPT, "%s: not a %s file (bad signature)", path,
                            accept == ACCEPT_PNG    ? "PNG"
                            : accept == ACCEPT_JPEG ? "JPEG"
                                                    : "PNG or JPEG");
    fclose(fp);
    return status;
}

int ms_png_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err) {
    return read_image(path, ACCEPT_PNG, want, im, err);
}

int ms_jpeg_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err) {
    return read_image(path, ACCEPT_JPEG, want, im, err);
}

int ms_image_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err) {
    return read_image(path, ACCEPT_PNG | ACCEPT_JPEG, want, im, err);
}

/* ---- writers --------------------------------------------------------------------------------- */

static int check_writable(const ms_image *im, const char *path, ms_io_err *err) {
    if (!im || !im->data || im->width <= 0 || im->height <= 0)
        return ms_io_fail(err, MS_IO_ARG, "%s: nothing to write (empty image)", path);
    if (im->depth != 8 && im->depth != 16)
        return ms_io_fail(err, MS_IO_ARG, "%s: cannot write %d-bit samples", path, im->depth);
    if (im->channels < 1 || im->channels > 4)
        return ms_io_fail(err, MS_IO_ARG, "%s: cannot write %d channels", path, im->channels);
    return MS_IO_OK;
}

/* Generators write tens of thousands of files. Measured on smooth 128x128 RGB scenes: zlib
 * level 2 with the UP filter on every row writes ~1.6x faster than levels 2-3 with libpng's
 * adaptive per-row filter choice, and gives smaller files that decode ~2x faster; level 3 and
 * up gain a few percent of size at a large cost in time. */
#define PNG_WRITE_LEVEL 2

static int png_encode_body(png_structp png, png_infop info, FILE *fp, png_ctx *ctx,
                           const ms_image *im, const png_color *plte, int plte_n, ms_io_err *err) {
    if (setjmp(png_jmpbuf(png)))
        return ms_io_fail(err, MS_IO_WRITE, "%s: PNG encoding failed (libpng: %s)", ctx->path,
                          ctx->libmsg);
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_init_io(png, fp);
    png_set_compression_level(png, PNG_WRITE_LEVEL);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_set_IHDR(png, info, (png_uint_32)im->width, (png_uint_32)im->height, im->depth,
                 plte ? PNG_COLOR_TYPE_PALETTE : types[im->channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (plte) png_set_PLTE(png, info, plte, plte_n);
    png_write_info(png, info);
    /* libpng transforms a private copy of each row, so the caller's pixels stay untouched. */
    if (im->depth == 16 && !HOST_IS_BIG_ENDIAN) png_set_swap(png);
    size_t stride = (size_t)im->width * (size_t)im->channels * (size_t)(im->depth / 8);
    const uint8_t *px = im->data;
    for (int y = 0; y < im->height; y++) png_write_row(png, px + (size_t)y * stride);
    png_write_end(png, info);
    return MS_IO_OK;
}

static int png_encode(FILE *fp, const char *path, const ms_image *im, const png_color *plte,
                      int plte_n, ms_io_err *err) {
    png_ctx ctx = {.path = path, .libmsg = ""};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    if (!png) return ms_io_fail(err, MS_IO_NOMEM, "%s: cannot create a PNG encoder", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return ms_io_fail(err, MS_IO_NOMEM, "%s: cannot create a PNG encoder", path);
    }
    int status = png_encode_body(png, info, fp, &ctx, im, plte, plte_n, err);
    png_destroy_write_struct(&png, &info);
    return status;
}

int ms_png_write(const char *path, const ms_image *im, const uint8_t *palette, int palette_n,
                 int flags, ms_io_err *err) {
    int status = check_writable(im, path, err);
    if (status) return status;
    png_color plte[256];
    if (palette) {
        if (im->channels != 1 || im->depth != 8)
            return ms_io_fail(err, MS_IO_ARG, "%s: an indexed PNG needs 8-bit 1-channel indices",
                              path);
        if (palette_n < 1 || palette_n > 256)
            return ms_io_fail(err, MS_IO_ARG, "%s: palette of %d colours, expected 1..256", path,
                              palette_n);
        const uint8_t *px = im->data;
        size_t n = ms_image_bytes(im);
        for (size_t i = 0; i < n; i++)
            if (px[i] >= palette_n)
                return ms_io_fail(err, MS_IO_ARG,
                                  "%s: index %u at pixel %zu is outside the %d-colour palette",
                                  path, px[i], i, palette_n);
        for (int i = 0; i < palette_n; i++) {
            plte[i].red = palette[3 * i];
            plte[i].green = palette[3 * i + 1];
            plte[i].blue = palette[3 * i + 2];
        }
    }
    ms_atomic a;
    FILE *fp;
    status = ms_atomic_begin(&a, path, &fp, err);
    if (status) return status;
    status = png_encode(fp, path, im, palette ? plte : NULL, palette_n, err);
    if (status) {
        ms_atomic_abort(&a, fp);
        return status;
    }
    return ms_atomic_commit(&a, fp, flags, err);
}

static int jpeg_encode_body(struct jpeg_compress_struct *cinfo, jpeg_err_ctx *jerr, FILE *fp,
                            const char *path, const ms_image *im, int quality, ms_io_err *err) {
    if (setjmp(jerr->jump))
        return ms_io_fail(err, MS_IO_WRITE, "%s: JPEG encoding failed (libjpeg: %s)", path,
                          jerr->msg);
    jpeg_create_compress(cinfo);
    jpeg_stdio_dest(cinfo, fp);
    cinfo->image_width = (JDIMENSION)im->width;
    cinfo->image_height = (JDIMENSION)im->height;
    cinfo->input_components = im->channels;
    cinfo->in_color_space = im->channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(cinfo);
    jpeg_set_quality(cinfo, quality, TRUE);
    jpeg_start_compress(cinfo, TRUE);
    size_t stride = (size_t)im->width * (size_t)im->channels;
    uint8_t *px = im->data;
    while (cinfo->next_scanline < cinfo->image_height) {
        JSAMPROW row = px + (size_t)cinfo->next_scanline * stride;
        jpeg_write_scanlines(cinfo, &row, 1);
    }
    jpeg_finish_compress(cinfo);
    return MS_IO_OK;
}

int ms_jpeg_write(const char *path, const ms_image *im, int quality, int flags, ms_io_err *err) {
    int status = check_writable(im, path, err);
    if (status) return status;
    if (im->depth != 8 || (im->channels != 1 && im->channels != 3))
        return ms_io_fail(err, MS_IO_ARG,
                          "%s: JPEG needs 8-bit grey or RGB, got %d-bit with %d channels", path,
                          im->depth, im->channels);
    if (quality < 1 || quality > 100)
        return ms_io_fail(err, MS_IO_ARG, "%s: JPEG quality %d, expected 1..100", path, quality);
    ms_atomic a;
    FILE *fp;
    status = ms_atomic_begin(&a, path, &fp, err);
    if (status) return status;
    struct jpeg_compress_struct cinfo;
    jpeg_err_ctx jerr;
    memset(&cinfo, 0, sizeof cinfo);
    jpeg_errors(&jerr, &cinfo.err);
    status = jpeg_encode_body(&cinfo, &jerr, fp, path, im, quality, err);
    jpeg_destroy_compress(&cinfo);
    if (status) {
        ms_atomic_abort(&a, fp);
        return status;
    }
    return ms_atomic_commit(&a, fp, flags, err);
}
