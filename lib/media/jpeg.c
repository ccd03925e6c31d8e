/* jpeg.c: libjpeg-turbo encoder/decoder wrappers (see jpeg.h). libjpeg reports fatal errors through
 * error_exit, which must not return: each call owns a jmp_buf in its own error manager, so calls on
 * different threads never share state. Warnings (emit_message level -1) mark the data corrupt. */
#include "jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "cli.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int warned;
    char msg[JMSG_LENGTH_MAX];
} err_mgr;

static void on_error(j_common_ptr c) {
    err_mgr *e = (err_mgr *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr c, int level) {
    err_mgr *e = (err_mgr *)c->err;
    if (level < 0 && !e->warned) { /* a warning: corrupt data that libjpeg would paper over */
        e->warned = 1;
        c->err->format_message(c, e->msg);
    }
}

static void init_err(err_mgr *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error;
    e->pub.emit_message = on_message;
    e->warned = 0;
    e->msg[0] = 0;
}

int cav_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, uint8_t **out, size_t *outlen,
                    cav_err *err) {
    struct jpeg_compress_struct c;
    err_mgr e;
    /* volatile: these are read after a longjmp back into this frame */
    unsigned char *volatile buf = NULL;
    unsigned long volatile len = 0;
    *out = NULL;
    *outlen = 0;
    if (w <= 0 || h <= 0 || w > JPEG_MAX_DIMENSION || h > JPEG_MAX_DIMENSION)
        return cav_fail(err, CAV_EXIT_INPUT, "jpeg: bad image size %dx%d", w, h);
    init_err(&e);
    c.err = &e.pub;
    if (setjmp(e.jb)) {
        jpeg_destroy_compress(&c);
        free(buf);
        return cav_fail(err, CAV_EXIT_INTERNAL, "jpeg encode: %s", e.msg);
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, (unsigned char **)&buf, (unsigned long *)&len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    /* PIL: jpeg_set_defaults, then jpeg_set_quality(q, TRUE); its default subsampling (-1) keeps libjpeg's
     * 2x2 luma sampling, i.e. 4:2:0; no dpi given keeps density 1:1 with unit 0. */
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *out = buf;
    *outlen = len;
    return 0;
}

/* Shared by size and decode: sets up the decompressor and reads the header inside the caller's setjmp. */
#define JPEG_BEGIN_DECODE(d, e, data, len)                                                                   \
    do {                                                                                                     \
        init_err(&(e));                                                                                      \
        (d).err = &(e).pub;                                                                                  \
        jpeg_create_decompress(&(d));                                                                        \
        jpeg_mem_src(&(d), (const unsigned char *)(data), (unsigned long)(len));                             \
    } while (0)

int cav_jpeg_size(const uint8_t *data, size_t len, int *w, int *h, cav_err *err) {
    struct jpeg_decompress_struct d;
    err_mgr e;
    if (!data || len < 4) return cav_fail(err, CAV_EXIT_INPUT, "jpeg: %zu bytes is not a JPEG", len);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        return cav_fail(err, CAV_EXIT_INPUT, "jpeg: %s", e.msg);
    }
    JPEG_BEGIN_DECODE(d, e, data, len);
    jpeg_read_header(&d, TRUE);
    *w = (int)d.image_width;
    *h = (int)d.image_height;
    int warned = e.warned;
    jpeg_destroy_decompress(&d);
    if (warned) return cav_fail(err, CAV_EXIT_INPUT, "jpeg: corrupt header: %s", e.msg);
    return 0;
}

int cav_jpeg_decode(const uint8_t *data, size_t len, uint8_t *rgb, size_t cap, int *w, int *h, cav_err *err) {
    struct jpeg_decompress_struct d;
    err_mgr e;
    if (!data || len < 4) return cav_fail(err, CAV_EXIT_INPUT, "jpeg: %zu bytes is not a JPEG", len);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        return cav_fail(err, CAV_EXIT_INPUT, "jpeg: %s", e.msg);
    }
    JPEG_BEGIN_DECODE(d, e, data, len);
    jpeg_read_header(&d, TRUE);
    if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&d);
        return cav_fail(err, CAV_EXIT_INPUT, "jpeg: CMYK images are not supported");
    }
    d.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d);
    *w = (int)d.output_width;
    *h = (int)d.output_height;
    if (d.output_components != 3 || (size_t)d.output_width * d.output_height * 3 > cap) {
        jpeg_destroy_decompress(&d);
        return cav_fail(err, CAV_EXIT_INPUT, "jpeg: %dx%d image does not fit the %zu-byte buffer", *w, *h,
                        cap);
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = rgb + (size_t)d.output_scanline * d.output_width * 3;
        jpeg_read_scanlines(&d, &row, 1);
        if (e.warned) break;
    }
    if (!e.warned) jpeg_finish_decompress(&d);
    int warned = e.warned;
    jpeg_destroy_decompress(&d);
    if (warned) return cav_fail(err, CAV_EXIT_INPUT, "jpeg: corrupt data: %s", e.msg);
    return 0;
}
