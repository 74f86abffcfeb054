package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"storepay/migrations"
)

// runBackup copies the config's database to --to while serve may run: no
// lock is taken, the copy is one read transaction (migrations.Backup).
// Exit 0 with the copy made and fsynced, 1 otherwise (nothing left at --to).
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	to := fs.String("to", "", "`path` of the copy to make; must not exist")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return &exitError{code: 2, err: errors.New("backup: --to is required")}
	}
	cfg, err := loadConfigFlag(*path)
	if err != nil {
		return err
	}
	c, err := migrations.Backup(ctx, cfg.Database, *to)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup %s: %d bytes, schema version %d, %d payments, %d store-and-forward records\n",
		c.Path, c.Bytes, c.SchemaVersion, c.Payments, c.SAFRecords)
	return nil
}

// runRestore puts a backup in place as the config's database, for the
// restore drill in docs/operations.md. It holds the database's lock, so it
// is refused while a serve runs, and it refuses to overwrite a database:
// the damaged one is moved aside first. The next serve applies any newer
// migrations and its resolver settles the payments in flight in the
// backup with the banks.
func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	from := fs.String("from", "", "`path` of a copy made by storepay backup")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" {
		return &exitError{code: 2, err: errors.New("restore: --from is required")}
	}
	cfg, err := loadConfigFlag(*path)
	if err != nil {
		return err
	}
	release, err := lockDatabase("restore", cfg.Database, 1)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, release()) }()
	c, err := migrations.Restore(ctx, *from, cfg.Database)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s from %s: schema version %d, %d payments, %d store-and-forward records; start serve to settle the payments in flight\n",
		c.Path, *from, c.SchemaVersion, c.Payments, c.SAFRecords)
	return nil
}
