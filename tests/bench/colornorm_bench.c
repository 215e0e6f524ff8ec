/* colornorm throughput per mode on 256x256 and 512x512 patches (tensor
 * output unless stated), through GstHarness on one thread. Time is the
 * thread's CPU time (the harness runs the element in the pushing thread),
 * so other load on the machine matters less. Prints a markdown table
 * (docs/benchmarks.md, colornorm section).
 * Usage: colornorm_bench [seconds-per-case, default 0.5] */
#include <gst/check/gstharness.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static gint64
cpu_time_us (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
  return (gint64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct
{
  const gchar *name;
  const gchar *props;           /* gst_util_set_object_arg pairs */
  gboolean video;
} Case;

static const Case cases[] = {
  {"rescale01", "mode=rescale01", FALSE},
  {"rescale11", "mode=rescale11", FALSE},
  {"standardize", "mode=standardize", FALSE},
  {"standardize-patch", "mode=standardize-patch", FALSE},
  {"reinhard, fit per patch", "mode=reinhard fit=per-patch", FALSE},
  {"reinhard, fit once", "mode=reinhard fit=first-patches", FALSE},
  {"macenko, fit per patch", "mode=macenko fit=per-patch", FALSE},
  {"macenko, fit once", "mode=macenko fit=first-patches", FALSE},
  {"reinhard, fit once, RGB out", "mode=reinhard fit=first-patches", TRUE},
  {"macenko, fit once, RGB out", "mode=macenko fit=first-patches", TRUE},
  {"rescale01 + augment (RGB+HED)", "mode=rescale01 augment=true seed=1",
      FALSE},
};

/* Synthetic H&E: two stains mixed per pixel, ~30% white background. */
static GstBuffer *
make_patch (gint size, guint seed)
{
  static const gdouble hv[3] = { 0.65, 0.70, 0.29 }, ev[3] = { 0.07, 0.99,
    0.11
  };
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) size * size * 3,
      NULL);
  GRand *r = g_rand_new_with_seed (seed);
  GstMapInfo map;
  gint i, c;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (i = 0; i < size * size; i++) {
    gboolean bg = g_rand_double (r) < 0.3;
    gdouble h = bg ? 0.02 : g_rand_double (r) * 1.2;
    gdouble e = bg ? 0.02 : g_rand_double (r) * 0.9;
    for (c = 0; c < 3; c++)
      map.data[i * 3 + c] = (guint8) CLAMP (lround (256.0 * exp (-(h * hv[c] +
                      e * ev[c])) - 1.0), 0, 255);
  }
  gst_buffer_unmap (buf, &map);
  g_rand_free (r);
  return buf;
}

static void
set_props (GstElement * el, const gchar * props)
{
  gchar **kv = g_strsplit (props, " ", -1);
  gint i;

  for (i = 0; kv[i]; i++) {
    gchar **p = g_strsplit (kv[i], "=", 2);
    if (p[0] && p[1])
      gst_util_set_object_arg (G_OBJECT (el), p[0], p[1]);
    g_strfreev (p);
  }
  g_strfreev (kv);
}

static gdouble
run_case (const Case * cs, gint size, gdouble seconds, GstBuffer ** patches,
    gint npatches)
{
  GstHarness *hr = gst_harness_new ("colornorm");
  gchar *caps = g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=0/1", size, size);
  gint64 t0, t1;
  guint n = 0, i;

  set_props (hr->element, cs->props);
  gst_harness_set_src_caps_str (hr, caps);
  if (cs->video)
    gst_harness_set_sink_caps_str (hr, "video/x-raw");
  /* warm up (and let fit-once estimates finish) */
  for (i = 0; i < 10; i++)
    gst_harness_push (hr, gst_buffer_ref (patches[i % npatches]));
  while (gst_harness_buffers_in_queue (hr))
    gst_buffer_unref (gst_harness_pull (hr));
  t0 = cpu_time_us ();
  do {
    for (i = 0; i < 4; i++, n++) {
      gst_harness_push (hr, gst_buffer_ref (patches[n % npatches]));
      gst_buffer_unref (gst_harness_pull (hr));
    }
    t1 = cpu_time_us ();
  } while ((t1 - t0) < seconds * 1e6);
  g_free (caps);
  gst_harness_teardown (hr);
  return (t1 - t0) / 1e3 / n;   /* ms per patch */
}

int
main (int argc, char **argv)
{
  static const gint sizes[] = { 256, 512 };
  gdouble seconds = argc > 1 ? g_ascii_strtod (argv[1], NULL) : 0.5;
  gdouble ms[G_N_ELEMENTS (cases)][2];
  guint c, s;

  gst_init (&argc, &argv);
  if (!(seconds > 0))
    seconds = 0.5;
  for (s = 0; s < G_N_ELEMENTS (sizes); s++) {
    GstBuffer *patches[4];
    gint i;
    for (i = 0; i < 4; i++)
      patches[i] = make_patch (sizes[s], i + 1);
    for (c = 0; c < G_N_ELEMENTS (cases); c++)
      ms[c][s] = run_case (&cases[c], sizes[s], seconds, patches, 4);
    for (i = 0; i < 4; i++)
      gst_buffer_unref (patches[i]);
  }
  g_print ("| mode | 256x256 ms/patch | 256x256 Mpx/s | 512x512 ms/patch | "
      "512x512 Mpx/s |\n|---|---:|---:|---:|---:|\n");
  for (c = 0; c < G_N_ELEMENTS (cases); c++)
    g_print ("| %s | %.2f | %.1f | %.2f | %.1f |\n", cases[c].name, ms[c][0],
        256.0 * 256 / 1e3 / ms[c][0], ms[c][1], 512.0 * 512 / 1e3 / ms[c][1]);
  return 0;
}
