"""When a log file rotates next: named schedules, cron (croniter), size."""
