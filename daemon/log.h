/* log.h - one line per event to stderr: level first, then key=value fields.
 *   LOG_INFO("listening addr=%s", addr);
 *   -> "level=info ts=2026-11-26T15:50:00.123Z msg=listening addr=..."
 * The macros check the level before evaluating their arguments. */
#ifndef CTXD_LOG_H
#define CTXD_LOG_H

enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN = 1, LOG_LVL_INFO = 2, LOG_LVL_DEBUG = 3 };

extern int log_level;

/* Parse "error"/"warn"/"info"/"debug"; -1 if unknown. */
int log_level_parse(const char *s);

/* `fmt` is "event-name key=value ..." ; the first word becomes msg=. */
void log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...) \
  do { if ((lvl) <= log_level) log_write((lvl), __VA_ARGS__); } while (0)
#define LOG_ERROR(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
