/* Instance label patches <-> Mask R-CNN targets and detections. */
#include "wsimrcnn-instances.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsidetect.h"

#define ROW(base, stride, y, type) \
  ((const type *) ((const uint8_t *) (base) + (size_t) (y) * (stride)))

void
wsimrcnn_targets_clear (WsiMrcnnTargets * t)
{
  free (t->ids);
  free (t->boxes);
  free (t->labels);
  free (t->masks);
  free (t->areas);
  memset (t, 0, sizeof *t);
}

int
wsimrcnn_targets_from_labels (const uint16_t * inst, size_t inst_stride,
    int w, int h, const uint8_t * classes, size_t class_stride,
    int n_classes, int ignore, int max_instances, int min_area,
    WsiMrcnnTargets * t, char *err, size_t errlen)
{
  int32_t *slot = NULL;         /* id -> object index, -1 none */
  uint32_t *votes = NULL;       /* [objects, n_classes] */
  int *bx = NULL;               /* [ids seen, 4] x0 y0 x1 y1 inclusive */
  uint32_t *area = NULL;
  int n_seen = 0, rc = -1;

  memset (t, 0, sizeof *t);
  if (!inst || w < 1 || h < 1 || inst_stride < (size_t) w * 2
      || (classes && class_stride < (size_t) w) || n_classes < 2
      || n_classes > 256 || max_instances < 0 || ignore > 65535
      || ignore == 0) {
    snprintf (err, errlen, "Mask R-CNN targets: bad arguments");
    return -1;
  }
  t->w = w;
  t->h = h;
  slot = malloc (65536 * sizeof *slot);
  if (!slot)
    goto oom;
  memset (slot, 0xff, 65536 * sizeof *slot);
  /* pass 1: ids, their boxes and areas */
  for (int y = 0; y < h; y++) {
    const uint16_t *row = ROW (inst, inst_stride, y, uint16_t);
    for (int x = 0; x < w; x++) {
      int id = row[x];
      if (id == 0)
        continue;
      if (id == ignore) {
        t->n_ignored++;
        continue;
      }
      int s = slot[id];
      if (s < 0) {
        if (n_seen % 256 == 0) {
          size_t cap = (size_t) n_seen + 256;
          int *nb = realloc (bx, cap * 4 * sizeof *bx);
          if (!nb)
            goto oom;
          bx = nb;
          uint32_t *na = realloc (area, cap * sizeof *area);
          if (!na)
            goto oom;
          area = na;
        }
        s = slot[id] = n_seen++;
        bx[s * 4] = bx[s * 4 + 2] = x;
        bx[s * 4 + 1] = bx[s * 4 + 3] = y;
        area[s] = 0;
      }
      area[s]++;
      if (x < bx[s * 4])
        bx[s * 4] = x;
      if (x > bx[s * 4 + 2])
        bx[s * 4 + 2] = x;
      bx[s * 4 + 3] = y;
    }
  }
  /* objects: ascending id, min_area */
  int n = 0;
  for (int id = 1; id < 65536; id++) {
    int s = slot[id];
    if (s < 0)
      continue;
    if ((int64_t) area[s] < min_area) {
      t->n_small++;
      slot[id] = -1;
      continue;
    }
    n++;
  }
  if (n > max_instances) {
    snprintf (err, errlen, "annotation patch has %d instances, more than the "
        "limit of %d per patch (max-instances)", n, max_instances);
    goto out;
  }
  t->n = n;
  if (n > 0) {
    t->ids = malloc ((size_t) n * sizeof *t->ids);
    t->boxes = malloc ((size_t) n * 4 * sizeof *t->boxes);
    t->labels = malloc ((size_t) n * sizeof *t->labels);
    t->areas = malloc ((size_t) n * sizeof *t->areas);
    t->masks = calloc ((size_t) n * h * w, sizeof *t->masks);
    votes = classes ? calloc ((size_t) n * n_classes, sizeof *votes) : NULL;
    if (!t->ids || !t->boxes || !t->labels || !t->areas || !t->masks
        || (classes && !votes))
      goto oom;
  }
  /* slot: id -> object index from now on */
  for (int id = 1, k = 0; id < 65536; id++) {
    int s = slot[id];
    if (s < 0)
      continue;
    t->ids[k] = (uint16_t) id;
    t->areas[k] = area[s];
    t->boxes[k * 4] = (float) bx[s * 4];
    t->boxes[k * 4 + 1] = (float) bx[s * 4 + 1];
    t->boxes[k * 4 + 2] = (float) bx[s * 4 + 2] + 1.0f;
    t->boxes[k * 4 + 3] = (float) bx[s * 4 + 3] + 1.0f;
    t->labels[k] = 1;
    slot[id] = k++;
  }
  /* pass 2: masks and class votes */
  for (int y = 0; n > 0 && y < h; y++) {
    const uint16_t *row = ROW (inst, inst_stride, y, uint16_t);
    const uint8_t *crow = classes ? ROW (classes, class_stride, y, uint8_t)
        : NULL;
    for (int x = 0; x < w; x++) {
      int id = row[x];
      int k = id ? slot[id] : -1;
      if (k < 0 || id == ignore)
        continue;
      t->masks[((size_t) k * h + y) * w + x] = 1.0f;
      if (!crow || crow[x] == 0 || crow[x] == WSIMRCNN_CLASS_IGNORE)
        continue;
      if (crow[x] >= n_classes) {
        snprintf (err, errlen, "class map value %d at (%d, %d) under instance "
            "%d is not a class of the model (n_classes %d)", crow[x], x, y,
            id, n_classes);
        goto out;
      }
      votes[(size_t) k * n_classes + crow[x]]++;
    }
  }
  for (int k = 0; classes && k < n; k++) {
    uint32_t best = 0;
    for (int c = 1; c < n_classes; c++)
      if (votes[(size_t) k * n_classes + c] > best) {
        best = votes[(size_t) k * n_classes + c];
        t->labels[k] = c;
      }
    t->n_unclassed += best == 0;
  }
  rc = 0;
  goto out;
oom:
  snprintf (err, errlen, "out of memory for the targets of a %d x %d patch",
      w, h);
out:
  free (slot);
  free (votes);
  free (bx);
  free (area);
  if (rc != 0)
    wsimrcnn_targets_clear (t);
  return rc;
}

int
wsimrcnn_paint (const float *boxes, const float *scores,
    const int32_t * labels, const float *masks, int m,
    const float *image_masks, int n, int w, int h, float threshold,
    uint16_t * out, size_t out_stride, WsiMrcnnObject * objects, char *err,
    size_t errlen)
{
  int *order = NULL, *owner = NULL;
  float *pasted = NULL;
  int32_t *ids = NULL;
  int rc = -1;

  if (n < 0 || n > 65534 || w < 1 || h < 1 || !out
      || out_stride < (size_t) w * 2 || (n > 0 && (!boxes || !scores
              || !labels || (!masks && !image_masks) || !objects))) {
    snprintf (err, errlen, "Mask R-CNN painting: bad arguments (%d "
        "detections, at most 65534)", n);
    return -1;
  }
  for (int y = 0; y < h; y++)
    memset ((uint8_t *) out + (size_t) y * out_stride, 0, (size_t) w * 2);
  if (n == 0)
    return 0;
  order = malloc ((size_t) n * sizeof *order);
  owner = malloc ((size_t) w * h * sizeof *owner);
  ids = calloc ((size_t) n, sizeof *ids);
  pasted = image_masks ? NULL : malloc ((size_t) w * h * sizeof *pasted);
  if (!order || !owner || !ids || (!image_masks && !pasted)) {
    snprintf (err, errlen, "out of memory painting %d detections", n);
    goto out;
  }
  /* descending score, stable (insertion sort: n is small) */
  for (int i = 0; i < n; i++) {
    int j = i;
    while (j > 0 && scores[order[j - 1]] < scores[i]) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  for (size_t p = 0; p < (size_t) w * h; p++)
    owner[p] = -1;
  for (int r = 0; r < n; r++) {
    int d = order[r];
    const float *pm = image_masks ? image_masks + (size_t) d * w * h : pasted;
    if (!image_masks && wsidet_paste_masks (masks + (size_t) d * m * m,
            boxes + (size_t) d * 4, 1, m, 1, h, w, pasted) < 0) {
      snprintf (err, errlen, "Mask R-CNN painting: mask pasting failed");
      goto out;
    }
    for (size_t p = 0; p < (size_t) w * h; p++)
      if (owner[p] < 0 && pm[p] >= threshold)
        owner[p] = r;
  }
  /* ids by rank among the detections that own a pixel */
  int *count = calloc ((size_t) n, sizeof *count);
  if (!count) {
    snprintf (err, errlen, "out of memory painting %d detections", n);
    goto out;
  }
  for (size_t p = 0; p < (size_t) w * h; p++)
    if (owner[p] >= 0)
      count[owner[p]]++;
  int no = 0;
  for (int r = 0; r < n; r++) {
    if (!count[r])
      continue;
    int d = order[r];
    WsiMrcnnObject *o = &objects[no];
    ids[r] = ++no;
    o->id = (uint16_t) no;
    o->class_id = labels[d];
    o->score = scores[d];
    memcpy (o->box, boxes + (size_t) d * 4, sizeof o->box);
    o->x0 = w;
    o->y0 = h;
    o->x1 = o->y1 = 0;
    o->area = (uint32_t) count[r];
    o->detection = d;
  }
  free (count);
  for (int y = 0; y < h; y++) {
    uint16_t *row = (uint16_t *) ((uint8_t *) out + (size_t) y * out_stride);
    for (int x = 0; x < w; x++) {
      int r = owner[(size_t) y * w + x];
      if (r < 0)
        continue;
      WsiMrcnnObject *o = &objects[ids[r] - 1];
      row[x] = (uint16_t) ids[r];
      if (x < o->x0)
        o->x0 = x;
      if (y < o->y0)
        o->y0 = y;
      if (x + 1 > o->x1)
        o->x1 = x + 1;
      o->y1 = y + 1;
    }
  }
  rc = no;
out:
  free (order);
  free (owner);
  free (ids);
  free (pasted);
  return rc;
}
