// oci prepare-boot: BLS entries for bootable images (oci/include/cfs/oci/boot.h). The
// VM smoke tests boot such an entry (vm/run-smoke, scenario bootc).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cfs/oci/boot.h"
#include "cfs/oci/oci.h"
#include "cfs/oci/pe.h"
#include "cfs/store/images.h"
#include "cfs/store/repository.h"
#include "oci_fixture.h"
#include "testdata.h"

namespace cfs::test::oci {
namespace {

namespace fs = std::filesystem;
namespace so = cfs::oci;
using store::Repository;

// An OS image whose kernels live in /usr/lib/modules (the bootc convention): two kernel
// versions, an os-release, and whatever extra lines the caller adds.
std::vector<Layer> os_layers(const std::string& extra = "") {
  std::vector<Layer> layers = base_image_layers();
  std::string text =
      "/ 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/usr 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/usr/lib 0 40755 2 0 0 0 1700000007.0 - - -\n"
      "/usr/lib/os-release 80 100644 1 0 0 0 1700000007.0 - - -\n"
      "/usr/lib/modules 0 40755 2 0 0 0 1700000007.0 - - -\n";
  for (const char* kver : {"6.12.0-2", "6.1.0-9"}) {
    std::string dir = std::string("/usr/lib/modules/") + kver;
    text += dir + " 0 40755 2 0 0 0 1700000007.0 - - -\n";
    text += dir + "/vmlinuz 300000 100644 1 0 0 0 1700000007.0 - - -\n";
    text += dir + "/initramfs.img 200000 100600 1 0 0 0 1700000007.0 - - -\n";
  }
  layers.push_back(dump_layer(text + extra));
  return layers;
}

class OciBootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(bootdir);
    store::InitOptions o;
    o.insecure = true;
    o.algorithm = HashAlgorithm::sha256;
    Repository::init(repo_path, o);
  }

  void pull(const std::vector<Layer>& layers, const std::string& tag, bool bootable = true) {
    LayoutBuilder b(layout);
    b.add_image(layers, tag);
    Repository repo = Repository::open(repo_path);
    so::PullOptions options;
    options.bootable = bootable;
    so::pull(repo, "oci:" + layout + ":" + tag, tag, options);
  }

  std::string error_of(const std::string& tag, const so::BootEntryOptions& options) {
    Repository repo = Repository::open(repo_path);
    try {
      so::prepare_boot(repo, tag, options);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }

  // Every file below the boot directory, relative.
  std::vector<std::string> boot_files() {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(bootdir))
      if (!e.is_directory()) out.push_back(fs::relative(e.path(), bootdir));
    std::sort(out.begin(), out.end());
    return out;
  }

  TempDir tmp;
  std::string layout = tmp / "layout";
  std::string repo_path = tmp / "repo";
  std::string bootdir = tmp / "boot";
};

// A repository whose images are format V2 (composefs-rs' init --erofs-version 2): the entry
// boots the V2 boot image by composefs=<id>, as composefs-rs writes it for such a repository,
// and that argument reads back as the image.
TEST_F(OciBootTest, V2RepositoryEntryBootsTheV2ImageByComposefsArgument) {
  write_file(repo_path + "/meta.json",
             store::RepoMeta::for_erofs_version(HashAlgorithm::sha256, 2).to_json());
  pull(os_layers(), "os");
  Repository repo = Repository::open(repo_path);
  const Digest boot_id = so::image_id(repo, "os", true);
  EXPECT_EQ(store::open_image_reader(repo, boot_id.hex()).format_version(), 2u);
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.kernel_arguments = {"rw"};
  so::BootEntry entry = so::prepare_boot(repo, "os", options);
  EXPECT_EQ(entry.image, boot_id);
  EXPECT_EQ(entry.options, "composefs=?" + boot_id.hex() + " rw");
  EXPECT_EQ(so::composefs_argument(entry.options)->image, boot_id);
  EXPECT_TRUE(so::composefs_argument(entry.options)->insecure);
  EXPECT_THROW(so::composefs_argument("composefs=abc"), Error);
}

TEST_F(OciBootTest, WritesTheEntryAndFilesOfTheFirstKernel) {
  pull(os_layers(), "os");
  Repository repo = Repository::open(repo_path);
  const Digest boot_id = so::image_id(repo, "os", true);
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.kernel_arguments = {"rw", "console=ttyS0", "console=hvc0"};
  so::BootEntry entry = so::prepare_boot(repo, "os", options);

  // composefs-rs' choice: the first kernel by byte order ("6.1.0-9" < "6.12.0-2").
  EXPECT_EQ(entry.kernel_version, "6.1.0-9");
  EXPECT_EQ(entry.image, boot_id);
  const std::string karg = "composefs.digest=?v1-sha256-12:" + boot_id.hex();
  // A later argument with the same key replaces the earlier one.
  EXPECT_EQ(entry.options, karg + " rw console=hvc0");
  EXPECT_EQ(boot_files(), (std::vector<std::string>{"6.1.0-9/initramfs.img", "6.1.0-9/vmlinuz",
                                                    "loader/entries/6.1.0-9.conf"}));
  EXPECT_TRUE(read_file(bootdir + "/6.1.0-9/vmlinuz") ==
              file_content("/usr/lib/modules/6.1.0-9/vmlinuz", 300000));
  EXPECT_TRUE(read_file(bootdir + "/6.1.0-9/initramfs.img") ==
              file_content("/usr/lib/modules/6.1.0-9/initramfs.img", 200000));
  // The generated os-release bytes have no PRETTY_NAME line: the title falls back.
  EXPECT_EQ(read_file(entry.entry_path), "# Written by cfs for os (composefs image " +
                                             boot_id.hex() +
                                             ")\n"
                                             "title composefs 6.1.0-9\n"
                                             "version 6.1.0-9\n"
                                             "linux /6.1.0-9/vmlinuz\n"
                                             "initrd /6.1.0-9/initramfs.img\n"
                                             "options " +
                                             karg + " rw console=hvc0\n");
}

TEST_F(OciBootTest, EntryIdKernelVersionAndTitle) {
  pull(os_layers("/etc 0 40755 2 0 0 0 1700000007.0 - - -\n"
                 "/etc/os-release 32 100644 1 0 0 0 1700000007.0 - "
                 "NAME=x\\x0aPRETTY_NAME=\"Test\\x20OS\\x2012\"\\x0a -\n"),
       "os");
  Repository repo = Repository::open(repo_path);
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.entry_id = "test-os";
  options.kernel_version = "6.12.0-2";
  so::BootEntry entry = so::prepare_boot(repo, "os", options);
  EXPECT_EQ(entry.entry_path, bootdir + "/loader/entries/test-os.conf");
  std::string text = read_file(entry.entry_path);
  // /usr/lib/os-release (generated bytes, no PRETTY_NAME) is read first, then /etc/os-release.
  EXPECT_NE(text.find("\ntitle Test OS 12\nversion 6.12.0-2\nlinux /test-os/vmlinuz\n"
                      "initrd /test-os/initramfs.img\n"),
            std::string::npos)
      << text;
  EXPECT_TRUE(read_file(bootdir + "/test-os/vmlinuz") ==
              file_content("/usr/lib/modules/6.12.0-2/vmlinuz", 300000));
  // Writing the same entry again replaces it in place.
  so::prepare_boot(repo, "os", options);
  EXPECT_EQ(boot_files(), (std::vector<std::string>{"loader/entries/test-os.conf",
                                                    "test-os/initramfs.img", "test-os/vmlinuz"}));
}

// Every string the entry takes from the image is refused when it holds a control character:
// a line break in the kernel version (the name of a /usr/lib/modules directory) would
// otherwise add a line such as "options rd.break" to the entry, and PRETTY_NAME's escape
// sequences would reach the boot menu.
TEST_F(OciBootTest, ControlCharactersFromTheImageAreRefused) {
  const std::string kdir = "/usr/lib/modules/6.1\\x0aoptions\\x20rd.break";
  pull({dump_layer("/ 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib/modules 0 40755 2 0 0 0 1700000000.0 - - -\n" +
                   kdir + " 0 40755 2 0 0 0 1700000000.0 - - -\n" + kdir +
                   "/vmlinuz 1000 100644 1 0 0 0 1700000000.0 - - -\n" + kdir +
                   "/initramfs.img 1000 100644 1 0 0 0 1700000000.0 - - -\n")},
       "kver");
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.entry_id = "safe";  // the kernel version is not needed as a file name
  std::string error = error_of("kver", options);
  EXPECT_NE(error.find("kernel version"), std::string::npos) << error;
  // The message shows the name escaped, on one line.
  EXPECT_NE(error.find("6.1\\x0aoptions rd.break"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  EXPECT_EQ(boot_files(), std::vector<std::string>{});

  // "PRETTY_NAME="OS<ESC>[31m"\n" in /etc/os-release.
  pull(os_layers("/etc 0 40755 2 0 0 0 1700000007.0 - - -\n"
                 "/etc/os-release 22 100644 1 0 0 0 1700000007.0 - "
                 "PRETTY_NAME=\"OS\\x1b[31m\"\\x0a -\n"),
       "title");
  options.entry_id.reset();
  error = error_of("title", options);
  EXPECT_NE(error.find("PRETTY_NAME 'OS\\x1b[31m'"), std::string::npos) << error;
  EXPECT_EQ(boot_files(), std::vector<std::string>{});

  // A C1 control (U+009B, CSI) passes the file-name check but not the entry's.
  pull(os_layers(), "os");
  options.entry_id = "os\xc2\x9b";
  error = error_of("os", options);
  EXPECT_NE(error.find("boot entry id 'os\\xc2\\x9b' holds control characters"), std::string::npos)
      << error;
  options.entry_id.reset();
  options.kernel_arguments = {"quiet\x1b]0;title\x07"};
  EXPECT_NE(error_of("os", options).find("holds control characters"), std::string::npos);
  EXPECT_EQ(boot_files(), std::vector<std::string>{});
}

TEST_F(OciBootTest, RefusalsAreClearAndWriteNothing) {
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  pull(os_layers(), "plain", /*bootable=*/false);
  EXPECT_NE(error_of("plain", options).find("bootable"), std::string::npos)
      << error_of("plain", options);

  pull(os_layers(), "os");
  options.bootdir = tmp / "no-such-boot";
  EXPECT_NE(error_of("os", options).find("no-such-boot: no such directory"), std::string::npos)
      << error_of("os", options);
  EXPECT_FALSE(fs::exists(tmp / "no-such-boot"));
  options.bootdir = bootdir;
  options.kernel_version = "9.9";
  EXPECT_NE(error_of("os", options).find("no kernel 9.9 in /usr/lib/modules"), std::string::npos)
      << error_of("os", options);
  options.kernel_version.reset();
  for (const char* bad : {"a/b", "..", "with space", ""}) {
    options.entry_id = bad;
    EXPECT_NE(error_of("os", options).find("is not a plain file name"), std::string::npos) << bad;
  }
  options.entry_id.reset();
  options.kernel_arguments = {"a\nb"};
  EXPECT_NE(error_of("os", options).find("holds control characters"), std::string::npos);
  options.kernel_arguments.clear();

  // An image whose UKI is not a PE file.
  pull(bootable_image_layers(1), "uki");
  EXPECT_NE(error_of("uki", options)
                .find("/boot/EFI/Linux/cfs-6.1.0-1.efi: not a valid PE/EFI executable"),
            std::string::npos)
      << error_of("uki", options);
  // A kernel without an initramfs.
  pull({dump_layer("/ 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib/modules 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib/modules/6.1 0 40755 2 0 0 0 1700000000.0 - - -\n"
                   "/usr/lib/modules/6.1/vmlinuz 1000 100644 1 0 0 0 1700000000.0 - - -\n")},
       "noinitrd");
  EXPECT_NE(error_of("noinitrd", options)
                .find("kernel 6.1 has no initramfs (/usr/lib/modules/6.1/initramfs.img)"),
            std::string::npos);
  EXPECT_EQ(boot_files(), std::vector<std::string>{});

  // A damaged kernel object: refused, and the boot directory gets no entry and no temporary.
  {
    Repository repo = Repository::open(repo_path);
    std::string kernel = file_content("/usr/lib/modules/6.1.0-9/vmlinuz", 300000);
    std::string object = repo_path + "/objects/" + fsverity_digest(kernel).object_path();
    ASSERT_TRUE(fs::exists(object));
    fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
    kernel[1000] ^= 1;
    write_file(object, kernel);
  }
  EXPECT_NE(error_of("os", options).find("does not match the digest the image records"),
            std::string::npos)
      << error_of("os", options);
  EXPECT_EQ(boot_files(), std::vector<std::string>{});
}

// An image with its own BLS Type 1 entries (kernel-install's layout: kernels in /boot, the
// entry naming them from the image's root), as composefs-rs relocates them.
std::string bls_lines(const std::string& entry_name, const std::string& text) {
  std::string escaped;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u >= 0x7f || c == '\\' || c == '=') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      escaped += buf;
    } else {
      escaped += c;
    }
  }
  return "/boot/loader/entries/" + entry_name + " " + std::to_string(text.size()) +
         " 100644 1 0 0 0 1700000007.0 - " + escaped + " -\n";
}

std::vector<Layer> bls_layers(const std::string& fedora_entry, const std::string& extra = "") {
  return os_layers(
      "/boot 0 40755 2 0 0 0 1700000007.0 - - -\n"
      "/boot/vmlinuz-6.1.0-9 300000 100644 1 0 0 0 1700000007.0 - - -\n"
      "/boot/initramfs-6.1.0-9.img 200000 100600 1 0 0 0 1700000007.0 - - -\n"
      "/boot/microcode.img 5000 100644 1 0 0 0 1700000007.0 - - -\n"
      "/boot/loader 0 40755 2 0 0 0 1700000007.0 - - -\n"
      "/boot/loader/entries 0 40755 2 0 0 0 1700000007.0 - - -\n" +
      bls_lines("fedora-6.1.conf", fedora_entry) +
      bls_lines("rescue.conf", "title Rescue\nlinux /usr/lib/modules/6.12.0-2/vmlinuz\n") + extra);
}

TEST_F(OciBootTest, ImagesOwnTypeOneEntriesAreRelocated) {
  const std::string fedora =
      "title Fedora 40\n"
      "version 6.1.0-9\n"
      "linux\t/boot/vmlinuz-6.1.0-9\n"
      "initrd /boot/microcode.img\n"
      "initrd /boot/initramfs-6.1.0-9.img\n"
      "options root=UUID=1234 composefs.digest=?v1-sha256-12:" +
      std::string(64, 'a') + " rw\n";
  pull(bls_layers(fedora), "bls");
  Repository repo = Repository::open(repo_path);
  const Digest boot = so::image_id(repo, "bls", true);
  const std::string karg = so::composefs_kernel_argument(boot, true);
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.kernel_arguments = {"quiet", "rw"};

  // Checked before anything is written: the digest, --entry-id with two entries.
  options.expected_digest = so::image_id(repo, "bls", false);
  EXPECT_NE(error_of("bls", options).find("--expected-digest"), std::string::npos);
  options.expected_digest = boot;
  options.entry_id = "one";
  EXPECT_NE(error_of("bls", options).find("--entry-id renames the image's BLS entry, but it has 2"),
            std::string::npos)
      << error_of("bls", options);
  options.entry_id.reset();
  EXPECT_EQ(boot_files(), std::vector<std::string>{});

  so::BootEntry entry = so::prepare_boot(repo, "bls", options);
  EXPECT_EQ(entry.image, boot);
  EXPECT_EQ(entry.entries, (std::vector<std::string>{bootdir + "/loader/entries/fedora-6.1.conf",
                                                     bootdir + "/loader/entries/rescue.conf"}));
  EXPECT_EQ(boot_files(), (std::vector<std::string>{
                              "fedora-6.1/.cfs-boot-files", "fedora-6.1/initramfs-6.1.0-9.img",
                              "fedora-6.1/microcode.img", "fedora-6.1/vmlinuz-6.1.0-9",
                              "loader/entries/fedora-6.1.conf", "loader/entries/rescue.conf",
                              "rescue/.cfs-boot-files", "rescue/vmlinuz"}));
  // The stale composefs argument is replaced in place, --cmdline words are replaced or added.
  EXPECT_EQ(read_file(bootdir + "/loader/entries/fedora-6.1.conf"),
            "# Written by cfs for bls (composefs image " + boot.hex() +
                ") from /boot/loader/entries/fedora-6.1.conf\n"
                "title Fedora 40\n"
                "version 6.1.0-9\n"
                "linux\t/fedora-6.1/vmlinuz-6.1.0-9\n"
                "initrd /fedora-6.1/microcode.img\n"
                "initrd /fedora-6.1/initramfs-6.1.0-9.img\n"
                "options root=UUID=1234 " +
                karg + " rw quiet\n");
  // An entry without options gets an options line.
  EXPECT_EQ(read_file(bootdir + "/loader/entries/rescue.conf"),
            "# Written by cfs for bls (composefs image " + boot.hex() +
                ") from /boot/loader/entries/rescue.conf\n"
                "title Rescue\n"
                "linux /rescue/vmlinuz\n"
                "options " +
                karg + " quiet rw\n");
  EXPECT_TRUE(read_file(bootdir + "/fedora-6.1/vmlinuz-6.1.0-9") ==
              file_content("/boot/vmlinuz-6.1.0-9", 300000));
  EXPECT_TRUE(read_file(bootdir + "/fedora-6.1/initramfs-6.1.0-9.img") ==
              file_content("/boot/initramfs-6.1.0-9.img", 200000));
  EXPECT_TRUE(read_file(bootdir + "/rescue/vmlinuz") ==
              file_content("/usr/lib/modules/6.12.0-2/vmlinuz", 300000));
  EXPECT_EQ(read_file(bootdir + "/fedora-6.1/.cfs-boot-files"),
            "initramfs-6.1.0-9.img\nmicrocode.img\nvmlinuz-6.1.0-9\n");
  // What a boot loader reads boots the boot image.
  EXPECT_EQ(so::composefs_argument(read_file(bootdir + "/loader/entries/rescue.conf"))->image,
            boot);

  // The entry goes, boot-gc takes the files it brought (and the list), nothing else.
  EXPECT_EQ(so::remove_boot_entry(bootdir, "fedora-6.1"),
            std::vector<std::string>{bootdir + "/loader/entries/fedora-6.1.conf"});
  EXPECT_EQ(
      so::gc_boot_dir(bootdir),
      (std::vector<std::string>{
          bootdir + "/fedora-6.1/initramfs-6.1.0-9.img", bootdir + "/fedora-6.1/microcode.img",
          bootdir + "/fedora-6.1/vmlinuz-6.1.0-9", bootdir + "/fedora-6.1/.cfs-boot-files"}));
  EXPECT_FALSE(fs::exists(bootdir + "/fedora-6.1"));
  EXPECT_EQ(so::gc_boot_dir(bootdir), std::vector<std::string>{});
  EXPECT_TRUE(fs::exists(bootdir + "/rescue/vmlinuz"));

  // Through the CLI, one entry renamed by --entry-id.
  fs::remove_all(bootdir);
  fs::create_directories(bootdir);
  pull(os_layers("/boot 0 40755 2 0 0 0 1700000007.0 - - -\n"
                 "/boot/loader 0 40755 2 0 0 0 1700000007.0 - - -\n"
                 "/boot/loader/entries 0 40755 2 0 0 0 1700000007.0 - - -\n" +
                 bls_lines("x.conf",
                           "linux /usr/lib/modules/6.1.0-9/vmlinuz\n"
                           "initrd /usr/lib/modules/6.1.0-9/initramfs.img\n")),
       "one");
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  std::string out;
  ASSERT_EQ(run(quote(cfsctl) + " --repo " + quote(repo_path) + " oci prepare-boot one --bootdir " +
                    quote(bootdir) + " --entry-id e1 2>&1",
                &out),
            0)
      << out;
  const Digest one = so::image_id(Repository::open(repo_path), "one", true);
  EXPECT_EQ(out, "entry " + bootdir + "/loader/entries/e1.conf\nfile " + bootdir +
                     "/e1/vmlinuz\nfile " + bootdir + "/e1/initramfs.img\nimage " + one.hex() +
                     "\n");
  EXPECT_NE(read_file(bootdir + "/loader/entries/e1.conf")
                .find("linux /e1/vmlinuz\ninitrd /e1/initramfs.img\noptions " +
                      so::composefs_kernel_argument(one, true) + "\n"),
            std::string::npos);
}

TEST_F(OciBootTest, TypeOneEntriesThatCannotBeRelocatedAreRefused) {
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  auto refused = [&](const std::string& tag, const std::string& fedora, const std::string& why) {
    pull(bls_layers(fedora), tag);
    std::string error = error_of(tag, options);
    EXPECT_NE(error.find(why), std::string::npos) << tag << ": " << error;
    EXPECT_EQ(boot_files(), std::vector<std::string>{}) << tag;
  };
  refused("missing", "linux /boot/vmlinuz-9\n",
          "/boot/loader/entries/fedora-6.1.conf: linux /boot/vmlinuz-9 is not a regular file in "
          "the image");
  refused("relative", "linux vmlinuz-6.1.0-9\n", "is not an absolute path to a file");
  refused("dir", "linux /boot/loader\n", "is not a regular file in the image");
  refused("nokernel", "title x\ninitrd /boot/microcode.img\n", "names no kernel");
  refused("clash",
          "linux /usr/lib/modules/6.1.0-9/vmlinuz\ninitrd /usr/lib/modules/6.12.0-2/vmlinuz\n",
          "would both become /fedora-6.1/vmlinuz");
  refused("v2bad", "linux /boot/vmlinuz-6.1.0-9\noptions composefs=abcd\n",
          "'composefs=abcd' is not composefs=[?]<hex digest>");
  refused("v2other",
          "linux /boot/vmlinuz-6.1.0-9\noptions composefs=" + std::string(64, 'c') + "\n",
          "names two composefs images");
  refused("other",
          "linux /boot/vmlinuz-6.1.0-9\noptions rw\noptions composefs.digest=v1-sha256-12:" +
              std::string(64, 'b') + "\n",
          "names two composefs images");
  refused("control", "linux /boot/vmlinuz-6.1.0-9\noptions rw\x1b[31m\n",
          "line 2 holds a control character");
  refused("overlay", "linux /boot/vmlinuz-6.1.0-9\ndevicetree-overlay /a.dtbo /b.dtbo\n",
          "devicetree-overlay is not relocated");
  // A damaged initramfs object: nothing is written, not even the entry's kernel.
  pull(bls_layers("linux /boot/vmlinuz-6.1.0-9\ninitrd /boot/initramfs-6.1.0-9.img\n"), "damaged");
  {
    std::string initrd = file_content("/boot/initramfs-6.1.0-9.img", 200000);
    std::string object = repo_path + "/objects/" + fsverity_digest(initrd).object_path();
    ASSERT_TRUE(fs::exists(object));
    fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
    initrd[10] ^= 1;
    write_file(object, initrd);
  }
  std::string error = error_of("damaged", options);
  EXPECT_NE(error.find("does not match the digest the image records"), std::string::npos) << error;
  EXPECT_EQ(boot_files(), std::vector<std::string>{});
}

// A real UKI: systemd's EFI stub with .cmdline, .linux and .initrd sections added by objcopy,
// as ukify does. Empty (and the test skips) without the stub.
const char* const kStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

std::string make_pe(const std::string& dir, const std::string& cmdline, bool with_kernel) {
  write_file(dir + "/cmdline", cmdline);
  write_file(dir + "/linux", file_content("/kernel", 100000));
  write_file(dir + "/initrd", file_content("/initrd", 50000));
  std::string cmd = "objcopy --add-section .cmdline=" + quote(dir + "/cmdline") +
                    " --change-section-vma .cmdline=0x30000";
  if (with_kernel)
    cmd +=
        " --add-section .linux=" + quote(dir + "/linux") +
        " --change-section-vma .linux=0x2000000 --add-section .initrd=" + quote(dir + "/initrd") +
        " --change-section-vma .initrd=0x3000000";
  cmd += std::string(" ") + kStub + " " + quote(dir + "/out.efi") + " 2>&1";
  std::string out;
  if (run(cmd, &out) != 0) throw std::runtime_error("objcopy: " + out);
  return read_file(dir + "/out.efi");
}

std::vector<RawEntry> efi_dirs() {
  return {{"boot/", '5', "", ""}, {"boot/EFI/", '5', "", ""}, {"boot/EFI/Linux/", '5', "", ""}};
}

TEST_F(OciBootTest, UnifiedKernelImagesNamingTheBootImage) {
  if (::access(kStub, R_OK) != 0)
    GTEST_SKIP() << kStub << " missing (package systemd-boot-efi, tools/setup-deps.sh)";
  // The sealed build: the boot image id comes first (/boot is emptied in it, so the UKI that
  // goes into /boot does not change it), then the UKI whose command line names it.
  std::vector<Layer> base = os_layers();
  base.push_back(Layer{tar_from_entries(efi_dirs()), Compression::gzip});
  pull(base, "unsealed");
  Digest boot = so::image_id(Repository::open(repo_path), "unsealed", true);
  std::string uki_bytes;
  auto sealed_layers = [&](const std::string& uki_cmdline, const std::string& addon_cmdline) {
    std::vector<RawEntry> entries = efi_dirs();
    uki_bytes = make_pe(tmp.path(), uki_cmdline, true);
    entries.push_back({"boot/EFI/Linux/os.efi", '0', "", uki_bytes});
    entries.push_back({"boot/EFI/Linux/os.efi.extra.d/", '5', "", ""});
    entries.push_back({"boot/EFI/Linux/os.efi.extra.d/debug.addon.efi", '0', "",
                       make_pe(tmp.path(), addon_cmdline, false)});
    std::vector<Layer> layers = base;
    layers.push_back(Layer{tar_from_entries(entries), Compression::zstd});
    return layers;
  };
  std::string karg = so::composefs_kernel_argument(boot, true);
  pull(sealed_layers(karg + " rw quiet", "debug"), "sealed");
  Repository repo = Repository::open(repo_path);
  ASSERT_EQ(so::image_id(repo, "sealed", true), boot) << "the UKI changed the boot image";

  so::BootEntryOptions options;
  options.bootdir = bootdir;
  options.expected_digest = so::image_id(repo, "sealed", false);  // not the boot image
  EXPECT_NE(error_of("sealed", options).find("--expected-digest"), std::string::npos);
  EXPECT_EQ(boot_files(), std::vector<std::string>{});
  options.expected_digest = boot;
  so::BootEntry entry = so::prepare_boot(repo, "sealed", options);
  EXPECT_EQ(entry.ukis, std::vector<std::string>{bootdir + "/EFI/Linux/os.efi"});
  EXPECT_EQ(entry.addons,
            std::vector<std::string>{bootdir + "/EFI/Linux/os.efi.extra.d/debug.addon.efi"});
  EXPECT_TRUE(read_file(bootdir + "/EFI/Linux/os.efi") == uki_bytes);
  // The written UKI's own .cmdline, read back by the PE parser.
  std::string written = read_file(bootdir + "/EFI/Linux/os.efi");
  so::PeFile pe(std::as_bytes(std::span(written)), "os.efi");
  EXPECT_EQ(pe.text_section(".cmdline"), karg + " rw quiet");
  EXPECT_EQ(so::composefs_argument(*pe.text_section(".cmdline"))->image, boot);
  // --entry-id renames the UKI and its addon directory.
  options.entry_id = "e1";
  entry = so::prepare_boot(repo, "sealed", options);
  EXPECT_EQ(entry.ukis, std::vector<std::string>{bootdir + "/EFI/Linux/e1.efi"});
  EXPECT_TRUE(fs::exists(bootdir + "/EFI/Linux/e1.efi.extra.d/debug.addon.efi"));
  options.entry_id.reset();
  options.expected_digest.reset();

  // Refused, writing nothing: a UKI that boots another image, one without the argument, an
  // addon that names an image, and --cmdline (sealed in the UKI).
  fs::remove_all(bootdir);
  fs::create_directories(bootdir);
  Digest other = so::image_id(repo, "unsealed", false);
  pull(sealed_layers(so::composefs_kernel_argument(other, false), "debug"), "other");
  EXPECT_NE(error_of("other", options).find("boots composefs image " + other.hex()),
            std::string::npos)
      << error_of("other", options);
  pull(sealed_layers("root=/dev/sda rw", "debug"), "noarg");
  EXPECT_NE(error_of("noarg", options).find("has no composefs.digest= argument"),
            std::string::npos);
  pull(sealed_layers(karg, karg), "addon");
  EXPECT_NE(error_of("addon", options).find("the addon's .cmdline names a composefs image"),
            std::string::npos);
  pull(sealed_layers("composefs.digest=v1-sha256-12:abc", "debug"), "malformed");
  EXPECT_NE(error_of("malformed", options).find("is not composefs.digest="), std::string::npos);
  options.kernel_arguments = {"rw"};
  EXPECT_NE(error_of("sealed", options).find("--cmdline cannot be added"), std::string::npos);
  EXPECT_EQ(boot_files(), std::vector<std::string>{});
}

// The PE parser refuses what it cannot bound: each header field pointing outside the file.
TEST(PeFile, HostileHeadersAreRefused) {
  if (::access(kStub, R_OK) != 0)
    GTEST_SKIP() << kStub << " missing (package systemd-boot-efi, tools/setup-deps.sh)";
  TempDir tmp;
  std::string good = make_pe(tmp.path(), "console=ttyS0", true);
  auto error = [](std::string data) {
    try {
      so::PeFile pe(std::as_bytes(std::span(data)), "x.efi");
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(error(good), "");
  auto put32 = [](std::string& d, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) d[at + i] = static_cast<char>(v >> (8 * i));
  };
  uint32_t pe = static_cast<uint8_t>(good[0x3c]) | static_cast<uint8_t>(good[0x3d]) << 8;
  std::string d = good;
  d[0] = 'X';
  EXPECT_NE(error(d).find("no 'MZ' signature"), std::string::npos);
  d = good;
  put32(d, 0x3c, static_cast<uint32_t>(good.size()));
  EXPECT_NE(error(d).find("outside the file"), std::string::npos);
  d = good;
  d[pe + 6] = static_cast<char>(200);  // NumberOfSections
  EXPECT_NE(error(d).find("200 sections"), std::string::npos);
  d = good.substr(0, pe + 24 + 100);  // the section table cut off
  EXPECT_NE(error(d).find("section table outside the file"), std::string::npos) << error(d);
  size_t end = 0;
  so::PeFile parsed(std::as_bytes(std::span(good)), "x");
  for (const so::PeSection& sec : parsed.sections())
    end = std::max<size_t>(end, sec.raw_offset + sec.raw_size);
  d = good.substr(0, end - 1);  // the last section's data cut off
  EXPECT_NE(error(d).find("has its data outside the file"), std::string::npos) << error(d);
  EXPECT_NE(error(good.substr(0, 10)).find("shorter than a DOS header"), std::string::npos);
}

// Entries come and go: removing one leaves its kernels to boot-gc, which removes exactly the
// files no remaining entry names and nothing it does not own.
TEST_F(OciBootTest, RemovedEntriesKernelsAreCollected) {
  pull(os_layers(), "os");
  Repository repo = Repository::open(repo_path);
  so::BootEntryOptions options;
  options.bootdir = bootdir;
  for (const char* id : {"e1", "e2"}) {
    options.entry_id = id;
    so::prepare_boot(repo, "os", options);
  }
  // Files the boot loader or the admin own: never collected.
  fs::create_directories(bootdir + "/grub/fonts");
  write_file(bootdir + "/grub/grub.cfg", "x");
  write_file(bootdir + "/grub/vmlinuz", "not in a flat directory");
  write_file(bootdir + "/config-6.1", "x");
  write_file(bootdir + "/loader/loader.conf", "timeout 3\n");
  fs::create_directories(bootdir + "/EFI/BOOT");
  write_file(bootdir + "/EFI/BOOT/BOOTX64.EFI", "x");
  // An orphaned addon directory and a live UKI with its addons.
  fs::create_directories(bootdir + "/EFI/Linux/gone.efi.extra.d");
  write_file(bootdir + "/EFI/Linux/gone.efi.extra.d/a.addon.efi", "x");
  fs::create_directories(bootdir + "/EFI/Linux/live.efi.extra.d");
  write_file(bootdir + "/EFI/Linux/live.efi", "x");
  write_file(bootdir + "/EFI/Linux/live.efi.extra.d/a.addon.efi", "x");

  EXPECT_EQ(so::gc_boot_dir(bootdir, true),
            std::vector<std::string>{bootdir + "/EFI/Linux/gone.efi.extra.d"});
  EXPECT_EQ(so::remove_boot_entry(bootdir, "e1"),
            std::vector<std::string>{bootdir + "/loader/entries/e1.conf"});
  EXPECT_TRUE(fs::exists(bootdir + "/e1/vmlinuz"));
  std::vector<std::string> removed = so::gc_boot_dir(bootdir);
  EXPECT_EQ(removed,
            (std::vector<std::string>{bootdir + "/e1/initramfs.img", bootdir + "/e1/vmlinuz",
                                      bootdir + "/EFI/Linux/gone.efi.extra.d"}));
  EXPECT_EQ(boot_files(), (std::vector<std::string>{
                              "EFI/BOOT/BOOTX64.EFI", "EFI/Linux/live.efi",
                              "EFI/Linux/live.efi.extra.d/a.addon.efi", "config-6.1",
                              "e2/initramfs.img", "e2/vmlinuz", "grub/grub.cfg", "grub/vmlinuz",
                              "loader/entries/e2.conf", "loader/loader.conf"}));
  EXPECT_EQ(so::gc_boot_dir(bootdir), std::vector<std::string>{});
  // A UKI entry goes with its addons.
  EXPECT_EQ(so::remove_boot_entry(bootdir, "live"),
            (std::vector<std::string>{bootdir + "/EFI/Linux/live.efi",
                                      bootdir + "/EFI/Linux/live.efi.extra.d"}));
  EXPECT_THROW(so::remove_boot_entry(bootdir, "live"), Error);
  EXPECT_THROW(so::remove_boot_entry(bootdir, "../e2"), Error);
  // Through the CLI.
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  std::string out;
  ASSERT_EQ(run(quote(cfsctl) + " oci remove-boot-entry e2 --bootdir " + quote(bootdir), &out), 0)
      << out;
  EXPECT_EQ(out, "removed " + bootdir + "/loader/entries/e2.conf\n");
  ASSERT_EQ(run(quote(cfsctl) + " oci boot-gc --bootdir " + quote(bootdir), &out), 0) << out;
  EXPECT_EQ(out, "removed " + bootdir + "/e2/initramfs.img\nremoved " + bootdir + "/e2/vmlinuz\n");
  EXPECT_FALSE(fs::exists(bootdir + "/e2"));
}

TEST_F(OciBootTest, Cli) {
  pull(os_layers(), "os");
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  std::string out;
  ASSERT_EQ(run(quote(cfsctl) + " --repo " + quote(repo_path) + " oci prepare-boot os --bootdir " +
                    quote(bootdir) + " --entry-id e1 --cmdline rw --cmdline quiet 2>&1",
                &out),
            0)
      << out;
  std::string id = trim([&] {
    std::string s;
    run(quote(cfsctl) + " --repo " + quote(repo_path) + " oci image-id os --bootable", &s);
    return s;
  }());
  EXPECT_EQ(out, "entry " + bootdir + "/loader/entries/e1.conf\nkernel 6.1.0-9 " + bootdir +
                     "/e1/vmlinuz\ninitramfs " + bootdir + "/e1/initramfs.img\noptions " +
                     "composefs.digest=?v1-sha256-12:" + id + " rw quiet\n");
  ASSERT_EQ(
      run(quote(cfsctl) + " --repo " + quote(repo_path) + " oci prepare-boot nosuch 2>&1", &out),
      1);
  EXPECT_NE(out.find("nosuch"), std::string::npos) << out;
}

}  // namespace
}  // namespace cfs::test::oci
