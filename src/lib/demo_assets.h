/* demo_assets.h: the demo's static files (web/), which the build turns into
 * a C array table (web/embed_assets.py writes demo_assets.c), so the demo
 * needs no files at run time. Private to the library. */
#ifndef NANOGPTQ_DEMO_ASSETS_H
#define NANOGPTQ_DEMO_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;         /* URL path, e.g. "/app.js" */
    const char *content_type; /* e.g. "text/javascript; charset=utf-8" */
    const unsigned char *data;
    size_t size;
} ngq_demo_asset;

extern const ngq_demo_asset ngq_demo_assets[];
extern const int ngq_demo_asset_count;

#endif
