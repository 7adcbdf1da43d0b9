/*
 * pagemap_uapi.h - the Linux 6.7+ PAGEMAP_SCAN ioctl and userfaultfd async write-protect bits.
 *
 * The kernel headers installed on the build machines predate Linux 6.7, but the running kernels
 * support these interfaces, so the definitions are carried here.  Values are the kernel's UAPI
 * (include/uapi/linux/fs.h and include/uapi/linux/userfaultfd.h, documented in
 * Documentation/admin-guide/mm/pagemap.rst and ioctl_pagemap_scan(2)); they are ABI and must never
 * be changed.  Every definition is guarded so newer installed headers win without conflict.
 */
#ifndef PAGESYNC_PAGEMAP_UAPI_H
#define PAGESYNC_PAGEMAP_UAPI_H

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

/* ---- include/uapi/linux/fs.h (Linux 6.7) ---- */
#ifndef PAGEMAP_SCAN

/* Bitmasks provided in pm_scan_arg masks and reported in page_region.categories. */
#define PAGE_IS_WPALLOWED   (1 << 0)
#define PAGE_IS_WRITTEN     (1 << 1)
#define PAGE_IS_FILE        (1 << 2)
#define PAGE_IS_PRESENT     (1 << 3)
#define PAGE_IS_SWAPPED     (1 << 4)
#define PAGE_IS_PFNZERO     (1 << 5)
#define PAGE_IS_HUGE        (1 << 6)
#define PAGE_IS_SOFT_DIRTY  (1 << 7)

/* One run of pages [start, end) sharing the same categories. */
struct page_region {
    __u64 start;
    __u64 end;
    __u64 categories;
};

/* Flags for the PAGEMAP_SCAN ioctl. */
#define PM_SCAN_WP_MATCHING    (1 << 0) /* write-protect the pages matched */
#define PM_SCAN_CHECK_WPASYNC  (1 << 1) /* fail (EPERM) on a VMA without async write-protect */

struct pm_scan_arg {
    __u64 size;                /* sizeof(struct pm_scan_arg) */
    __u64 flags;
    __u64 start;               /* page-aligned start of the range */
    __u64 end;                 /* end of the range (exclusive) */
    __u64 walk_end;            /* written by the kernel: where the walk stopped */
    __u64 vec;                 /* user address of struct page_region[vec_len] */
    __u64 vec_len;
    __u64 max_pages;           /* 0 = no limit */
    __u64 category_inverted;   /* categories that match when 0 instead of 1 */
    __u64 category_mask;       /* all of these must match */
    __u64 category_anyof_mask; /* at least one of these must match (0 = no condition) */
    __u64 return_mask;         /* categories reported in page_region.categories */
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#endif /* PAGEMAP_SCAN */

/* ---- include/uapi/linux/userfaultfd.h (WP_UNPOPULATED: 6.4, WP_ASYNC: 6.7) ---- */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#endif /* PAGESYNC_PAGEMAP_UAPI_H */
