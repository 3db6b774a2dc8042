/* Image codecs for the data path: PNG through libpng, JPEG through libjpeg-turbo.
 *
 * Error convention, shared by every codec in data/ (image.h, npy.h, matfile.h): a function
 * returns MS_IO_OK (0) on success or a negative ms_io_status; on failure, when `err` is not
 * NULL, err->msg holds one line for a person that names the path, what was found and what was
 * expected ("a/b.png: 16-bit PNG, expected 8-bit"). The codecs never print, never exit, and a
 * failing call releases everything it acquired (buffers the caller passed in stay the caller's).
 *
 * Canonical layout: samples in row-major HWC order, uint8_t for depth 8, uint16_t in HOST byte
 * order for depth 16 (PNG stores big-endian; we swap).
 *
 * Two decoding modes, because labels and photographs need different things:
 *  - MS_IMG_LABEL: the raw sample values, exactly as PIL's np.array(Image.open(f)) gives them
 *    (DATASETS.md, "Decoding rule for every label file"): no gamma, colour-space or tRNS
 *    processing; 16-bit kept whole; a palette PNG gives its palette INDICES; alpha is dropped
 *    unless keep_alpha. Low-bit grey follows PIL: 1-bit grey is PIL mode '1', whose np.array is
 *    bool, so a set pixel reads 1 (not 255); 2-bit and 4-bit grey are PIL mode 'L' through
 *    Pillow's "L;2"/"L;4" unpackers, which scale by 0x55 and 0x11 (2-bit 3 -> 255, 4-bit 15 ->
 *    255). Deliberate difference from PIL: 16-bit RGB(A) and grey+alpha keep all 16 bits (PIL
 *    truncates them to the high byte), because the decoding rule says 16-bit values stay whole.
 *  - MS_IMG_COLOR: an 8-bit picture, as PIL's Image.convert('RGB' or 'L') gives it: palette
 *    expanded through PLTE (tRNS ignored), low-bit grey scaled to 0..255, alpha dropped (not
 *    composited), grey replicated to 3 channels when 3 are asked for. 16-bit samples keep
 *    their high byte, as PIL's "RGB;16B" unpacker does (for 16-bit grey PIL would clip at 255
 *    instead, which no picture wants).
 *  Checked against Pillow 13 (np.array of Image.open and of .convert('RGB')) on a file of every
 *  colour type and bit depth, with and without tRNS and Adam7: identical arrays except for the
 *  deliberate differences named above.
 *
 * Buffer reuse: an ms_image owns its pixel buffer and some decoder scratch, and every read
 * reuses them when they are big enough, so a worker that keeps one ms_image per stream decodes
 * without allocating after the first file. ms_image_borrow() instead points an image at a
 * caller's buffer; a read that does not fit it fails (MS_IO_MISMATCH) rather than reallocating.
 *
 * Writers are atomic: they write a temporary file in the destination's directory, fsync it,
 * rename it over the destination and fsync the directory, so a reader never sees half a file.
 * MS_IO_NOSYNC skips both fsyncs (bulk generators whose output is disposable); the rename
 * still guarantees that a file is either absent or whole. */
#ifndef MS_DATA_IMAGE_H
#define MS_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- error convention shared by data/ codecs ------------------------------------------------- */

typedef enum {
    MS_IO_OK = 0,
    MS_IO_OPEN = -1,        /* missing or unreadable file, or a file that cannot be created */
    MS_IO_CORRUPT = -2,     /* truncated or malformed contents */
    MS_IO_UNSUPPORTED = -3, /* a valid file of a kind these codecs do not read */
    MS_IO_MISMATCH = -4,    /* readable, but not what the caller asked for (depth, channels,
                               size, shape, dtype, buffer too small) */
    MS_IO_NOMEM = -5,
    MS_IO_WRITE = -6, /* writing, syncing or renaming failed */
    MS_IO_ARG = -7    /* the caller passed an invalid argument */
} ms_io_status;

typedef struct {
    ms_io_status status;
    char msg[1024];
} ms_io_err;

/* Records a failure in err (when not NULL) and returns status; for use by the data/ codecs. */
int ms_io_fail(ms_io_err *err, ms_io_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Flags for the writers. */
#define MS_IO_NOSYNC 1 /* skip fsync of the file and its directory */

/* Atomic replacement of `path`, used by every writer in data/: begin creates a temporary file
 * beside path (and opens it as *fp when fp is not NULL); commit flushes and closes fp (when
 * not NULL), fsyncs unless MS_IO_NOSYNC, and renames the temporary over path; abort closes fp
 * and removes the temporary. The temporary's name is in a->tmp for writers that must reopen it
 * by name (libmatio). */
typedef struct {
    char tmp[4200];
    const char *path;
} ms_atomic;
int ms_atomic_begin(ms_atomic *a, const char *path, FILE **fp, ms_io_err *err);
int ms_atomic_commit(ms_atomic *a, FILE *fp, int flags, ms_io_err *err);
void ms_atomic_abort(ms_atomic *a, FILE *fp);

/* ---- images ---------------------------------------------------------------------------------- */

typedef enum { MS_IMG_LABEL = 0, MS_IMG_COLOR = 1 } ms_img_mode;

typedef struct {
    int width, height; /* W, H */
    int channels;      /* C: 1 grey/index, 2 grey+alpha, 3 RGB, 4 RGBA */
    int depth;         /* bits per sample: 8 (uint8_t) or 16 (uint16_t, host order) */
    void *data;        /* H x W x C samples, row-major HWC */
    size_t capacity;   /* bytes available at data */
    int borrowed;      /* data belongs to the caller: never grown or freed here */
    void *scratch;     /* decoder scratch (row pointers, raw interlaced pixels), reused */
    size_t scratch_capacity;
} ms_image;

/* What the caller needs; a zero field means "whatever the file has". A designated initialiser
 * reads well: (ms_img_want){.mode = MS_IMG_LABEL, .channels = 1, .depth = 16}. */
typedef struct {
    ms_img_mode mode;
    int channels;      /* LABEL: required channel count after alpha is dropped (0 = any);
                          COLOR: 1 or 3 (0 means 3) */
    int depth;         /* LABEL: 8 or 16 required (0 = any); COLOR: 0 or 8 */
    int width, height; /* required size (0 = any) */
    int keep_alpha;    /* LABEL only: keep an alpha channel instead of dropping it */
} ms_img_want;

void ms_image_init(ms_image *im);
/* Decode into buf (bytes long) from now on; the image never reallocates it. */
void ms_image_borrow(ms_image *im, void *buf, size_t bytes);
/* Frees what the image owns and resets it to the state ms_image_init gives. */
void ms_image_free(ms_image *im);
size_t ms_image_bytes(const ms_image *im); /* H*W*C*depth/8 */
static inline uint8_t *ms_image_u8(const ms_image *im) { return (uint8_t *)im->data; }
static inline uint16_t *ms_image_u16(const ms_image *im) { return (uint16_t *)im->data; }

/* Decoders. want may be NULL (LABEL, anything). On failure im keeps its buffers but its
 * contents and dimensions are unspecified. */
int ms_png_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err);
/* JPEG is always 8-bit; grey JPEGs become 3 channels when 3 are asked for (COLOR mode or
 * channels == 3); a colour JPEG asked for 1 channel is a mismatch. In LABEL mode with
 * channels 0 the file's own count (1 or 3) is kept. */
int ms_jpeg_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err);
/* Either of the above, chosen by the file's signature (not its name). */
int ms_image_read(const char *path, const ms_img_want *want, ms_image *im, ms_io_err *err);

/* Writes im (depth 8 or 16, 1..4 channels) as a PNG. With a palette (palette_n RGB triplets,
 * 1..256) the image must be 8-bit, 1 channel, every value < palette_n, and is written as an
 * indexed PNG: what VOC-style index labels look like on disk. */
int ms_png_write(const char *path, const ms_image *im, const uint8_t *palette, int palette_n,
                 int flags, ms_io_err *err);
/* Writes an 8-bit grey (1 channel) or RGB (3 channels) JPEG at quality 1..100. */
int ms_jpeg_write(const char *path, const ms_image *im, int quality, int flags, ms_io_err *err);

#endif
